"""Which account a provider's login opens, and its groups.

- A subject (iss + sub) is linked to one user (OidcIdentity) at its first login; later logins
  find the user by that link, never by an e-mail address. A first login takes the user name
  from VDI_OIDC_USERNAME_CLAIM; a local account (with its own password) of that name is never
  taken over.
- Without LDAP, the provider's groups (VDI_OIDC_GROUPS_CLAIM) are mirrored exactly as a
  directory's are (identity.services.accounts.record_directory_login): Django groups of the
  same name, memberships brought in line at each login, the user deactivated when entitled to
  nothing; the broker's signals then close lost consoles and start the grace periods.
- With LDAP too, the directory is the source of groups: VDI_OIDC_DIRECTORY_CLAIM names the
  directory user (found by the directory's own user search) and the login goes on as a
  directory login does (identity.backends.DirectoryBackend.finish_directory_login).
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import refusals
from ..directory import DirectoryGroupEntry
from ..models import DirectoryAccount, OidcIdentity
from ..services import accounts

log = logging.getLogger(__name__)
User = get_user_model()


class SsoRefused(Exception):
    """The provider vouched for the person, but this portal will not log them in."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _claim_text(claims: dict, name: str) -> str:
    value = claims.get(name)
    return value.strip() if isinstance(value, str) else ""


def provider_groups(claims: dict) -> list[DirectoryGroupEntry]:
    value = claims.get(settings.VDI_OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    names = sorted({str(name).strip()[:150] for name in value if str(name).strip()})
    # The "dn" of a provider group: its name under a prefix no LDAP DN can have.
    return [DirectoryGroupEntry(dn=f"oidc:{name.lower()}", name=name) for name in names]


def _refusal_message(request, default: str) -> str:
    refusal = refusals.refusal_of(request)
    return refusal.message if refusal is not None else default


def _link(*, user, issuer: str, subject: str) -> None:
    identity = OidcIdentity.objects.filter(issuer=issuer, subject=subject).first()
    if identity is None:
        try:
            with transaction.atomic():
                OidcIdentity.objects.create(user=user, issuer=issuer, subject=subject, last_login_at=timezone.now())
        except IntegrityError:  # the same person's other tab linked it meanwhile
            identity = OidcIdentity.objects.get(issuer=issuer, subject=subject)
    if identity is not None:
        if identity.user_id != user.pk:
            raise SsoRefused("Your sign-in is linked to another account here. Ask your administrator.")
        OidcIdentity.objects.filter(pk=identity.pk).update(last_login_at=timezone.now())


def _provider_user(*, issuer: str, subject: str, claims: dict):
    identity = OidcIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
    if identity is not None:
        return identity.user
    username = _claim_text(claims, settings.VDI_OIDC_USERNAME_CLAIM)[:150]
    if not username:
        raise SsoRefused(f"The identity provider sent no user name (claim {settings.VDI_OIDC_USERNAME_CLAIM}).")
    existing = User.objects.filter(username=username).first()
    if existing is not None:
        linked = OidcIdentity.objects.filter(user=existing).exists()
        if existing.has_usable_password() or linked or DirectoryAccount.objects.filter(user=existing).exists():
            log.warning("single sign-on of %s (sub %s) matches the existing account %s; not logging in as it",
                        username, subject, username)
            raise SsoRefused(f"An account named {username} exists here already and is not linked to your "
                             "sign-in. Ask your administrator.")
        return existing  # made by an admin without a password, to be claimed by the provider's login
    user = User(username=username)
    user.set_unusable_password()
    user.save()
    return user


def _update_names(user, claims: dict) -> None:
    fields = {"first_name": _claim_text(claims, "given_name"), "last_name": _claim_text(claims, "family_name"),
              "email": _claim_text(claims, "email")}
    changed = []
    for name, value in fields.items():
        value = value[: User._meta.get_field(name).max_length]
        if value and getattr(user, name) != value:
            setattr(user, name, value)
            changed.append(name)
    if changed:
        user.save(update_fields=changed)


def user_for_provider_login(*, request, issuer: str, subject: str, claims: dict):
    """The active, entitled user this login opens; raises SsoRefused with a reason to show."""
    if settings.LDAP_ENABLED:
        return _directory_user(request=request, issuer=issuer, subject=subject, claims=claims)
    with transaction.atomic():
        user = _provider_user(issuer=issuer, subject=subject, claims=claims)
        _link(user=user, issuer=issuer, subject=subject)
        _update_names(user, claims)
        refusal = accounts.record_directory_login(user=user, dn=f"oidc:{issuer}#{subject}",
                                                  groups=provider_groups(claims))
    if refusal == refusals.NOT_ENTITLED:
        raise SsoRefused(refusals.not_entitled().message)
    user.refresh_from_db(fields=["is_active"])
    if refusal is not None or not user.is_active:
        raise SsoRefused(refusals.inactive().message)
    return user


def _directory_user(*, request, issuer: str, subject: str, claims: dict):
    from django_auth_ldap.backend import _LDAPUser

    from ..backends import DirectoryBackend

    name = _claim_text(claims, settings.VDI_OIDC_DIRECTORY_CLAIM)
    if not name:
        raise SsoRefused(f"The identity provider sent no {settings.VDI_OIDC_DIRECTORY_CLAIM}, which names your "
                         "directory account.")
    if accounts.is_local_account(name):
        raise SsoRefused(f"{name} is a local account here; it cannot be opened by single sign-on.")
    backend = DirectoryBackend()
    ldap_user = _LDAPUser(backend, username=name, request=request)
    user = ldap_user.populate_user()
    if user is None:
        raise SsoRefused(_refusal_message(request, f"The company directory has no account {name}."))
    _link(user=user, issuer=issuer, subject=subject)
    if backend.finish_directory_login(request, user) is None:
        raise SsoRefused(_refusal_message(request, refusals.inactive().message))
    return user
