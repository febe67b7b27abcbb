"""Signal receivers: logins and failures feed the throttle and the audit log; directory errors
during a login are told apart from wrong passwords; admin changes are audited."""

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver
from django_auth_ldap.backend import ldap_error, populate_user

from . import refusals
from .http import client_address_of
from .models import AuditEvent
from .services import audit, throttling

Kind = AuditEvent.Kind
_LOGIN_CONTEXTS = {"authenticate", "search_for_user_dn", "populate_user", "mirror_groups"}


@receiver(ldap_error)
def directory_failed_during_login(sender, context, request=None, exception=None, **kwargs):
    # django-auth-ldap logs the error and returns None, which would read as a wrong password.
    if context in _LOGIN_CONTEXTS:
        refusals.refuse(request, refusals.directory_unavailable())


@receiver(populate_user)
def fit_directory_values_to_the_user(sender, user, ldap_user, **kwargs):
    # A directory value longer than the field (a 200-character display name) must not turn the
    # login into a database error; the sync cuts them the same way.
    for field in user._meta.concrete_fields:
        value = getattr(user, field.attname, None)
        if isinstance(value, str) and field.max_length and len(value) > field.max_length:
            setattr(user, field.attname, value[: field.max_length])


@receiver(user_login_failed)
def login_failed(sender, credentials, request=None, **kwargs):
    if "nonce" in credentials:
        return  # a single sign-on callback: identity/oidc/views.py records why it failed
    username = str(credentials.get("username") or "")
    address = client_address_of(request)
    refusal = refusals.refusal_of(request)
    if refusal is not None:
        # Not the user's fault (directory down) or already refused (locked): not counted.
        audit.record_event(kind=Kind.LOGIN_REFUSED, request=request, username=username, client_address=address,
                           message=refusal.message)
        return
    lockouts = throttling.record_failed_login(username=username, address=address)
    audit.record_event(kind=Kind.LOGIN_FAILED, request=request, username=username, client_address=address)
    for lockout in lockouts:
        audit.record_event(kind=Kind.LOCKOUT, request=request, username=username, client_address=address,
                           target=f"{lockout.get_scope_display().lower()} {lockout.key}",
                           message=f"{lockout.failures} failed logins; locked until "
                                   f"{lockout.locked_until:%Y-%m-%d %H:%M} UTC")


@receiver(user_logged_in)
def logged_in(sender, request, user, **kwargs):
    address = client_address_of(request)
    throttling.record_successful_login(username=user.get_username(), address=address)
    backend = getattr(user, "backend", "")
    if backend.endswith("OidcBackend"):
        via = f"single sign-on ({settings.VDI_OIDC_PROVIDER_NAME})"
    else:
        via = "directory" if backend.endswith("DirectoryBackend") else "local account"
    audit.record_event(kind=Kind.LOGIN, request=request, actor=user, client_address=address, message=f"via {via}")


@receiver(user_logged_out)
def logged_out(sender, request, user, **kwargs):
    if settings.OIDC_ENABLED:
        from .oidc.logout import forget_login_session

        forget_login_session(getattr(getattr(request, "session", None), "session_key", None))
    if user is not None:
        audit.record_event(kind=Kind.LOGOUT, request=request, actor=user)


@receiver(post_save, sender=LogEntry)
def admin_changed_something(sender, instance, created, **kwargs):
    if created:
        audit.import_admin_log()
