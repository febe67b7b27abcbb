"""Reads: who may launch what, which desktop a user has, where a new desktop goes."""

from django.db.models import Q, Sum

from .models import Desktop, DesktopState, Host, Pool
from .models.desktops import LIVE_STATES

S = DesktopState
# Desktops that occupy (or are about to occupy) a share of their host.
PLACED_STATES = frozenset({S.QUEUED, S.CLONING, S.STARTING, S.RUNNING, S.STOPPING, S.RECOMPOSING})
SPARE_STATES = frozenset({S.QUEUED, S.CLONING, S.STARTING, S.RUNNING, S.STOPPED})


def entitled_pools(*, user):
    """Enabled pools the user may launch, directly or through one of their groups."""
    if not user.is_authenticated or not user.is_active:
        return Pool.objects.none()
    return (
        Pool.objects.filter(is_enabled=True)
        .filter(Q(entitlements__user=user) | Q(entitlements__group__in=user.groups.all()))
        .distinct()
        .select_related("image")
    )


def is_entitled(*, user, pool) -> bool:
    return entitled_pools(user=user).filter(pk=pool.pk).exists()


def live_desktop_of(*, user, pool) -> Desktop | None:
    return (
        Desktop.objects.filter(user=user, pool=pool, state__in=LIVE_STATES)
        .select_related("host", "pool", "image_version")
        .first()
    )


def desktops_by_pool(*, user) -> dict[int, Desktop]:
    desktops = Desktop.objects.filter(user=user, state__in=LIVE_STATES).select_related("pool")
    return {d.pool_id: d for d in desktops}


def host_load(*, host) -> tuple[int, int]:
    """vCPUs and MiB of memory placed on `host` by its live desktops."""
    totals = Desktop.objects.filter(host=host, state__in=PLACED_STATES).aggregate(
        vcpus=Sum("pool__vcpus"), memory=Sum("pool__memory_mib")
    )
    return totals["vcpus"] or 0, totals["memory"] or 0


def pick_host(*, pool) -> Host | None:
    """The host with the most free memory (after overcommit) that can take one more desktop
    of `pool`; the pool's pinned host if it has one. None when no host has room."""
    hosts = Host.objects.filter(is_enabled=True, is_online=True, in_maintenance=False)
    if pool.host_id:
        hosts = hosts.filter(pk=pool.host_id)
    best, best_free = None, None
    for host in hosts.order_by("name"):
        used_vcpus, used_memory = host_load(host=host)
        if host.cpus is None or host.memory_mib is None:
            free = float("inf")  # not measured yet: the host check fills these in
        else:
            free_vcpus = host.cpus * host.vcpu_overcommit - used_vcpus
            free_memory = host.memory_mib * host.memory_overcommit - used_memory
            if free_vcpus < pool.vcpus or free_memory < pool.memory_mib:
                continue
            free = free_memory / (host.memory_mib * host.memory_overcommit)
        if best is None or free > best_free:
            best, best_free = host, free
    return best


def in_flight_on(*, host) -> int:
    return Desktop.objects.filter(host=host, state__in=(S.QUEUED, S.CLONING, S.STARTING, S.RECOMPOSING)).count()


def spares_of(*, pool):
    """Unassigned desktops of the pool that are ready or on their way."""
    return Desktop.objects.filter(pool=pool, user__isnull=True, state__in=SPARE_STATES)


def live_count(*, pool) -> int:
    return Desktop.objects.filter(pool=pool, state__in=LIVE_STATES).count()
