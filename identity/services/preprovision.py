"""Desktops made ahead of time for a group's members, so each is ready at its user's first login."""

from dataclasses import dataclass, field

from broker import selectors
from broker.models import Entitlement, Pool
from broker.services.assignment import launch_desktop
from broker.services.errors import LaunchRefused

from ..models import AuditEvent
from . import audit


class PreprovisionRefused(Exception):
    pass


@dataclass
class PreprovisionResult:
    requested: int = 0
    already_had_one: int = 0
    refused: list[str] = field(default_factory=list)


def preprovision_pool_for_group(*, pool: Pool, group, actor=None, request=None) -> PreprovisionResult:
    """Ask for a desktop in `pool` for every active member of `group` who has none yet.

    Idempotent: members with a desktop in the pool are left alone, and launch_desktop itself
    never makes two for one user.
    """
    if pool.kind != Pool.Kind.DEDICATED:
        raise PreprovisionRefused(f"{pool} is not a dedicated pool: its desktops belong to no one in advance.")
    if not Entitlement.objects.filter(pool=pool, group=group).exists():
        raise PreprovisionRefused(f"The group {group} is not entitled to {pool}.")
    result = PreprovisionResult()
    for user in group.user_set.filter(is_active=True).order_by("username"):
        if selectors.live_desktop_of(user=user, pool=pool) is not None:
            result.already_had_one += 1
            continue
        try:
            launch_desktop(user=user, pool=pool)
        except LaunchRefused as refused:
            result.refused.append(f"{user.get_username()}: {refused}")
            continue
        result.requested += 1
    audit.record_event(
        kind=AuditEvent.Kind.PREPROVISION, request=request, actor=actor, target=f"pool {pool.name}",
        message=f"group {group}: {result.requested} desktop(s) requested, {result.already_had_one} member(s) "
                f"already had one, {len(result.refused)} refused",
    )
    return result


def dedicated_pools_of(group):
    return Pool.objects.filter(entitlements__group=group, kind=Pool.Kind.DEDICATED).distinct()
