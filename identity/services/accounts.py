"""Directory accounts and their groups: the rules a login and the sync share.

- Only users with a DirectoryAccount belong to the directory; a local account (a usable
  password and no DirectoryAccount) is never taken over by a directory entry of the same name.
- Only memberships of directory users in directory groups are changed, always through
  `user.groups` / `group.user_set` so the broker's signals end access that was lost.
- A directory user is active while they are in the directory and entitled to something: a
  member of an entitled directory group, entitled directly, or staff. The directory reactivates
  only users it deactivated itself, never one an admin deactivated.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Q

from broker.models import Entitlement

from .. import refusals
from ..directory import DirectoryGroupEntry
from ..models import AuditEvent, DirectoryAccount, DirectoryGroup
from . import audit

User = get_user_model()
Reason = DirectoryAccount.InactiveReason


def is_local_account(username: str) -> bool:
    """A Django account with a password of its own that the directory has never owned."""
    return (
        User.objects.filter(username=username, directory_account__isnull=True)
        .exclude(password__startswith=UNUSABLE_PASSWORD_PREFIX)
        .exists()
    )


def is_local_user(user) -> bool:
    return user.has_usable_password() and not DirectoryAccount.objects.filter(user_id=user.pk).exists()


def fitted_user_fields(values: dict) -> dict:
    """Directory values (AUTH_LDAP_USER_ATTR_MAP's fields) for the user row, each text cut to its
    field's length: a 200-character display name must not turn a login or a sync into a
    database error."""
    user_model = get_user_model()
    fitted = {}
    for name, value in values.items():
        max_length = user_model._meta.get_field(name).max_length
        fitted[name] = value[:max_length] if isinstance(value, str) and max_length else value
    return fitted


def link_directory_group(entry: DirectoryGroupEntry) -> tuple[DirectoryGroup, bool]:
    """The DirectoryGroup for `entry`, made (with its Django group, by name) if new; renamed if
    the directory renamed it and the new name is free."""
    directory_group = DirectoryGroup.objects.select_related("group").filter(dn=entry.dn).first()
    if directory_group is None:
        with transaction.atomic():
            group, _ = Group.objects.get_or_create(name=entry.name)
            directory_group, created = DirectoryGroup.objects.get_or_create(
                dn=entry.dn, defaults={"name": entry.name, "group": group}
            )
        return directory_group, created
    changed = []
    if directory_group.missing_since is not None:
        directory_group.missing_since = None
        changed.append("missing_since")
    if directory_group.name != entry.name:
        directory_group.name = entry.name
        changed.append("name")
        group = directory_group.group
        # Rename the Django group too (its entitlements follow), unless another group has the name.
        if not Group.objects.filter(name=entry.name).exists():
            group.name = entry.name
            group.save(update_fields=["name"])
    if changed:
        directory_group.save(update_fields=changed)
    return directory_group, False


def directory_group_ids() -> set[int]:
    """Django groups the directory manages (including groups gone from it: members are removed)."""
    return set(DirectoryGroup.objects.values_list("group_id", flat=True))


def entitled_group_ids() -> set[int]:
    return set(Entitlement.objects.filter(group__isnull=False).values_list("group_id", flat=True))


def directly_entitled_user_ids() -> set[int]:
    return set(Entitlement.objects.filter(user__isnull=False).values_list("user_id", flat=True))


def deserves_access(*, user, group_ids: set[int], entitled_groups: set[int], entitled_users: set[int]) -> bool:
    return bool(group_ids & entitled_groups) or user.pk in entitled_users or user.is_staff or user.is_superuser


def set_memberships(*, user, target: set[int], current: set[int]) -> tuple[int, int]:
    """Make the user's directory-group memberships `target`; return (added, removed)."""
    to_add, to_remove = target - current, current - target
    if to_add:
        user.groups.add(*to_add)
    if to_remove:
        user.groups.remove(*to_remove)
    return len(to_add), len(to_remove)


def deactivate(*, user, account: DirectoryAccount, reason: str, current: set[int], note: str) -> int:
    """Deactivate a directory user and take them out of every directory group (the broker then
    closes their consoles and schedules their desktops' deletion); return memberships removed."""
    with transaction.atomic():
        was_active = user.is_active
        if was_active:
            user.is_active = False
            user.save(update_fields=["is_active"])
        if current:
            user.groups.remove(*current)
        # A user an admin deactivated keeps an empty reason: the directory never reactivates them.
        if was_active or account.inactive_reason:
            account.inactive_reason = reason
        account.save(update_fields=["inactive_reason", "missing_since", "dn"])
        if was_active:
            audit.record_event(kind=AuditEvent.Kind.ACCOUNT_DEACTIVATED, username=user.get_username(),
                               target=f"user {user.get_username()}", message=note)
    return len(current)


def reactivate(*, user, account: DirectoryAccount, note: str) -> None:
    with transaction.atomic():
        user.is_active = True
        user.save(update_fields=["is_active"])
        account.inactive_reason = Reason.NONE
        account.save(update_fields=["inactive_reason"])
        audit.record_event(kind=AuditEvent.Kind.ACCOUNT_REACTIVATED, username=user.get_username(),
                           target=f"user {user.get_username()}", message=note)


def record_directory_login(*, user, dn: str, groups: list[DirectoryGroupEntry]) -> str | None:
    """After the directory accepted a password: link the account, mirror its groups, and apply
    the same activity rule as the sync. Returns why the login may not proceed, or None."""
    with transaction.atomic():
        account, _ = DirectoryAccount.objects.get_or_create(user=user, defaults={"dn": dn})
        if account.dn != dn or account.missing_since is not None:
            account.dn, account.missing_since = dn, None
            account.save(update_fields=["dn", "missing_since"])
        target = {link_directory_group(entry)[0].group_id for entry in groups}
        # The user's memberships of groups the directory manages; then the sync's activity rule
        # (deserves_access), asked of the database for this one user.
        current = set(user.groups.filter(directory_groups__isnull=False).distinct().values_list("pk", flat=True))
        entitled = (user.is_staff or user.is_superuser
                    or Entitlement.objects.filter(Q(user=user) | Q(group_id__in=target)).exists())
        if not entitled:
            if user.is_active or current:
                deactivate(user=user, account=account, reason=Reason.NO_ENTITLEMENT, current=current,
                           note="logged in, but is in no entitled group")
            return refusals.NOT_ENTITLED
        if not user.is_active and account.inactive_reason:
            reactivate(user=user, account=account, note="logged in and is entitled again")
        set_memberships(user=user, target=target, current=current)
        return None if user.is_active else refusals.INACTIVE
