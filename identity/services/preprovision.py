"""Desktops made ahead of time for a group's members, so each is ready at its user's first login."""

from dataclasses import asdict, dataclass, field

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


def _check(pool: Pool, group) -> None:
    if pool.kind != Pool.Kind.DEDICATED:
        raise PreprovisionRefused(f"{pool} is not a dedicated pool: its desktops belong to no one in advance.")
    if not Entitlement.objects.filter(pool=pool, group=group).exists():
        raise PreprovisionRefused(f"The group {group} is not entitled to {pool}.")


def preprovision_pool_for_group(*, pool: Pool, group, actor=None, request=None, progress=None) -> PreprovisionResult:
    """Ask for a desktop in `pool` for every active member of `group` who has none yet.

    Idempotent: members with a desktop in the pool are left alone, and launch_desktop itself
    never makes two for one user.
    """
    _check(pool, group)
    result = PreprovisionResult()
    members = list(group.user_set.filter(is_active=True).order_by("username"))
    for index, user in enumerate(members):
        if progress is not None:  # between members: the admin may stop it here
            from broker.services.jobs import JobCancelled

            try:
                progress.step(done=index, total=len(members), message=f"{index} of {len(members)} members: "
                              f"{result.requested} requested, {result.already_had_one} had one")
            except JobCancelled:
                _record(result, pool, group, actor, request, stopped=True)
                raise JobCancelled(asdict(result)) from None
        if selectors.live_desktop_of(user=user, pool=pool) is not None:
            result.already_had_one += 1
            continue
        try:
            launch_desktop(user=user, pool=pool)
        except LaunchRefused as refused:
            result.refused.append(f"{user.get_username()}: {refused}")
            continue
        result.requested += 1
    _record(result, pool, group, actor, request)
    return result


def _record(result: PreprovisionResult, pool, group, actor, request, *, stopped: bool = False) -> None:
    audit.record_event(
        kind=AuditEvent.Kind.PREPROVISION, request=request, actor=actor, target=f"pool {pool.name}",
        message=f"group {group}: {result.requested} desktop(s) requested, {result.already_had_one} member(s) "
                f"already had one, {len(result.refused)} refused" + ("; stopped by an admin" if stopped else ""),
    )


def start_preprovision(*, pool: Pool, group, actor=None):
    """Pre-provisioning as a job (a progress bar over the members; may be stopped between them).
    Refused at once (PreprovisionRefused) where it could never work."""
    from broker.services.jobs import start_job

    _check(pool, group)
    return start_job(kind="group_preprovision", target_key=f"group:{group.pk}/pool:{pool.pk}",
                     target_label=f"group {group} → {pool}", started_by=actor,
                     params={"pool_id": pool.pk, "group_id": group.pk})


def preprovision_job(job, progress):
    from django.contrib.auth.models import Group

    from broker.services.jobs import failed, succeeded

    pool = Pool.objects.select_related("image").filter(pk=job.params["pool_id"]).first()
    group = Group.objects.filter(pk=job.params["group_id"]).first()
    if pool is None or group is None:
        return failed(None, "the pool or the group was deleted")
    try:
        result = preprovision_pool_for_group(pool=pool, group=group, actor=job.started_by, progress=progress)
    except PreprovisionRefused as refused:
        return failed(None, str(refused))
    text = (f"{result.requested} desktop(s) requested, {result.already_had_one} member(s) already had one, "
            f"{len(result.refused)} refused")
    return succeeded(asdict(result), text)


def dedicated_pools_of(group):
    return Pool.objects.filter(entitlements__group=group, kind=Pool.Kind.DEDICATED).distinct()
