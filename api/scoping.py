"""Who sees and changes what through the API: the one place the roles are decided.

- A superuser: everything.
- Staff with model permissions: as in the admin; `view_x` (or `change_x`) to read a resource,
  `change_x` to run its actions, `add_`/`delete_entitlement` to grant and withdraw. Everything
  of that resource, all pools.
- An auditor (member of the group "Auditors"): reads every resource, never writes (403),
  whatever else they hold, unless they are a superuser.
- An operator (an OperatorScope names them or one of their groups): the pools of their scopes
  only. They read those pools, their desktops, console sessions, entitlements, desktop events,
  pool events and live migrations, and hosts and golden images (read-only: a move names a
  destination host); they end sessions of, move and delete those desktops and grant and
  withdraw those pools' entitlements. Another pool's rows are not in their querysets at all:
  a detail or an action on one answers 404, exactly as a row that does not exist.

Scoping is the queryset: each view asks `visible(user, Model)` for reads and
`actionable(user, Model)` for writes, and DRF's get_object() finds nothing outside it.
"""

from django.db.models import Q

from broker.models import (
    BrokerEvent,
    ConsoleSession,
    Desktop,
    DesktopEvent,
    Entitlement,
    GoldenImage,
    GoldenImageVersion,
    Host,
    LiveMigration,
    Pool,
)

from .models import AUDITORS_GROUP, OperatorScope

# How each pool-scoped model reaches its pool.
POOL_PATH = {
    Pool: "pk",
    Desktop: "pool_id",
    ConsoleSession: "desktop__pool_id",
    Entitlement: "pool_id",
    DesktopEvent: "desktop__pool_id",
    BrokerEvent: "pool_id",
    LiveMigration: "desktop__pool_id",
}
# Read by operators whole (not pool-scoped), never written by them.
OPERATOR_READS_WHOLE = {Host, GoldenImage, GoldenImageVersion}
# Written by operators, within their pools.
OPERATOR_WRITES = {Desktop, Entitlement}


def _perm(model, action: str) -> str:
    return f"{model._meta.app_label}.{action}_{model._meta.model_name}"


def is_auditor(user) -> bool:
    if not hasattr(user, "_api_is_auditor"):
        user._api_is_auditor = user.is_authenticated and user.groups.filter(name=AUDITORS_GROUP).exists()
    return user._api_is_auditor


def operator_pool_ids(user) -> frozenset[int]:
    """The pools of the user's operator scopes, directly or through a group."""
    if not hasattr(user, "_api_operator_pools"):
        if not user.is_authenticated:
            user._api_operator_pools = frozenset()
        else:
            scopes = OperatorScope.objects.filter(Q(user=user) | Q(group__in=user.groups.all()))
            user._api_operator_pools = frozenset(
                pk for pk in scopes.values_list("pools", flat=True) if pk is not None)
    return user._api_operator_pools


def is_operator(user) -> bool:
    return bool(operator_pool_ids(user))


def _staff_may(user, model, *actions: str) -> bool:
    return user.is_staff and any(user.has_perm(_perm(model, action)) for action in actions)


def reads_all(user, model) -> bool:
    return user.is_superuser or is_auditor(user) or _staff_may(user, model, "view", "change")


def may_read(user, model) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    if reads_all(user, model):
        return True
    return is_operator(user) and (model in POOL_PATH or model in OPERATOR_READS_WHOLE)


def writes_all(user, model, action: str) -> bool:
    return user.is_superuser or (not is_auditor(user) and _staff_may(user, model, action))


def may_write(user, model, action: str = "change") -> bool:
    """`action`: the model permission the admin would ask for (change, add, delete)."""
    if not (user.is_authenticated and user.is_active):
        return False
    if writes_all(user, model, action):
        return True
    return not is_auditor(user) and model in OPERATOR_WRITES and is_operator(user)


def _scoped(queryset, user):
    path = POOL_PATH.get(queryset.model)
    if path is None:
        return queryset
    return queryset.filter(**{f"{path}__in": operator_pool_ids(user)})


def visible(user, queryset):
    """`queryset` narrowed to what `user` may read."""
    if not may_read(user, queryset.model):
        return queryset.none()
    return queryset if reads_all(user, queryset.model) else _scoped(queryset, user)


def actionable(user, queryset, action: str = "change"):
    """`queryset` narrowed to what `user` may change (run actions on, delete)."""
    if not may_write(user, queryset.model, action):
        return queryset.none()
    return queryset if writes_all(user, queryset.model, action) else _scoped(queryset, user)


def visible_desktops(user):
    return visible(user, Desktop.objects.all())


def visible_pools(user):
    return visible(user, Pool.objects.all())


def writable_pools(user, model, action: str):
    """Pools in which `user` may write `model` rows (an entitlement's pool on create)."""
    if writes_all(user, model, action):
        return Pool.objects.all()
    if is_auditor(user) or model not in OPERATOR_WRITES:
        return Pool.objects.none()
    return Pool.objects.filter(pk__in=operator_pool_ids(user))
