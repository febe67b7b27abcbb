"""Entitlement changes, wherever they come from, end the access they withdrew."""

from django.contrib.auth import get_user_model, user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from .models import Entitlement
from .console import control as console_control
from .console.close_codes import CloseCode
from .services.access import revoke_lost_access_on_commit

User = get_user_model()


@receiver(m2m_changed, sender=User.groups.through)
def group_membership_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action not in ("post_remove", "post_clear", "post_add"):
        return
    if not reverse:  # user.groups.remove(...): one user
        revoke_lost_access_on_commit(user_ids=[instance.pk])
    elif action == "post_clear":  # group.user_set.clear(): members unknown now; check the group's pools' users
        revoke_lost_access_on_commit(user_ids=User.objects.filter(desktops__isnull=False).values_list("pk", flat=True))
    else:  # group.user_set.remove(...): these users
        revoke_lost_access_on_commit(user_ids=pk_set or [])


@receiver(post_delete, sender=Entitlement)
def entitlement_deleted(sender, instance, **kwargs):
    users = User.objects.filter(desktops__pool_id=instance.pool_id).values_list("pk", flat=True)
    revoke_lost_access_on_commit(user_ids=list(users))


@receiver(post_save, sender=User)
def user_saved(sender, instance, created, update_fields=None, **kwargs):
    if not created and not instance.is_active and (update_fields is None or "is_active" in update_fields):
        revoke_lost_access_on_commit(user_ids=[instance.pk])


@receiver(user_logged_out)
def close_consoles_of_the_ended_login(sender, request, user, **kwargs):
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        console_control.close_consoles(
            group=console_control.login_session_group(session_key),
            code=CloseCode.NOT_LOGGED_IN,
            reason="You logged out.",
        )


@receiver(post_save, sender=User)
def close_consoles_after_a_password_change(sender, instance, created, **kwargs):
    # A new password ends every login of the user (Django's session auth hash): their consoles
    # too. set_password() keeps the new password in _password until save() has finished.
    if created or getattr(instance, "_password", None) is None:
        return
    user_id = instance.pk
    transaction.on_commit(lambda: console_control.close_consoles(
        group=console_control.user_group(user_id),
        code=CloseCode.NOT_LOGGED_IN,
        reason="Your password was changed. Log in again.",
    ))
