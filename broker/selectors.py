"""Reads: who may launch what, which desktop a user has, where a new desktop goes."""

from dataclasses import dataclass

from django.db.models import Q, Sum

from .capacity import pool_capacity  # noqa: F401  (a pool's spares and power now, and their next change)
from .models import Desktop, DesktopState, Host, Pool
from .models.desktops import LIVE_STATES

S = DesktopState
# Desktops that occupy (or are about to occupy) a share of their host.
PLACED_STATES = frozenset({S.QUEUED, S.CLONING, S.STARTING, S.RUNNING, S.STOPPING, S.RECOMPOSING, S.MIGRATING})
SPARE_STATES = frozenset({S.QUEUED, S.CLONING, S.STARTING, S.RUNNING, S.MIGRATING, S.STOPPED})


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


def live_desktop_of(*, user, pool, application=None) -> Desktop | None:
    """The user's live desktop of `pool` (farms: their session of `application`, or of the
    full desktop when it is None)."""
    desktop = (Desktop.objects.filter(user=user, pool=pool, application=application, state__in=LIVE_STATES)
               .select_related("host").first())  # at most one row (a unique constraint)
    if desktop is not None:
        desktop.pool, desktop.application = pool, application  # the caller's rows: not read again
    return desktop


def desktops_by_pool(*, user) -> dict[tuple[int, int | None], Desktop]:
    """The user's live desktops by (pool id, published application id or None)."""
    desktops = Desktop.objects.filter(user=user, state__in=LIVE_STATES).select_related("pool", "application")
    return {(d.pool_id, d.application_id): d for d in desktops}


def waiting_sessions(*, pool):
    """A farm's sessions waiting for a host, in the order they will get one."""
    return Desktop.objects.filter(pool=pool, state=S.QUEUED, host__isnull=True).order_by("pk")


def place_in_queue(*, desktop) -> int | None:
    """1 for the next session to get a host, 2 for the one after...; None when not waiting."""
    if desktop.state != S.QUEUED or desktop.host_id is not None:
        return None
    return waiting_sessions(pool=desktop.pool_id).filter(pk__lt=desktop.pk).count() + 1


def host_load(*, host) -> tuple[int, int]:
    """vCPUs and MiB of memory placed on `host` by its live desktops."""
    return host_loads(hosts=[host]).get(host.pk, (0, 0))


def host_loads(*, hosts) -> dict[int, tuple[int, int]]:
    """(vCPUs, MiB of memory) placed by live desktops, by host id, for `hosts` (a queryset or a
    list); a host with nothing placed is absent. One query however many hosts: placement asks
    for every candidate host at each launch."""
    host_ids = hosts.values("pk") if hasattr(hosts, "values") else [host.pk for host in hosts]
    rows = (
        Desktop.objects.filter(host__in=host_ids, state__in=PLACED_STATES)
        .order_by()
        .values("host")
        .annotate(vcpus=Sum("pool__vcpus"), memory=Sum("pool__memory_mib"))
        .values_list("host", "vcpus", "memory")
    )
    return {host_id: (vcpus or 0, memory or 0) for host_id, vcpus, memory in rows}


@dataclass(frozen=True)
class HostVerdict:
    """One host's answer to "may a desktop of this pool go here?": `refusal` is None when it may
    (then `score` ranks it: higher is freer), else the reason in plain words; `code` names the
    cause for programs (disabled, fenced, offline, maintenance, full_cpu, full_memory)."""

    host: Host
    refusal: str | None = None
    code: str = "ok"
    score: tuple = ()


def placement_verdicts(*, pool, among=None) -> list[HostVerdict]:
    """Every hypervisor that could take a desktop of `pool` (its pinned host only, if it has
    one), each with its verdict. The one decision placement takes (`pick_host`) and the one the
    "why isn't it ready" pages show: they cannot disagree."""
    hosts = Host.objects.filter(kind=Host.Kind.HYPERVISOR)
    if among is not None:
        hosts = hosts.filter(pk__in=among.values("pk"))
    if pool.host_id:
        hosts = hosts.filter(pk=pool.host_id)
    hosts = list(hosts.order_by("name"))
    loads = host_loads(hosts=[host for host in hosts if host.accepts_new_desktops])
    return [_verdict(host, pool, loads.get(host.pk, (0, 0))) for host in hosts]


def host_verdict(*, host: Host, pool, with_load: bool = True) -> HostVerdict:
    """The verdict on one host (the one a desktop was placed on); without `with_load`, only
    whether it is usable at all (enabled, online, not draining): no query."""
    load = host_loads(hosts=[host]).get(host.pk, (0, 0)) if with_load and host.accepts_new_desktops else (0, 0)
    return _verdict(host, pool, load)


def _verdict(host: Host, pool, load: tuple[int, int]) -> HostVerdict:
    if not host.is_enabled:
        if host.fenced_at is not None:
            return HostVerdict(host, "fenced after it stopped answering; an admin must return it to service",
                               "fenced")
        return HostVerdict(host, "disabled by an admin", "disabled")
    if not host.is_online:
        error = f" ({host.last_error[:200]})" if host.last_error else ""
        return HostVerdict(host, f"offline: its libvirt does not answer{error}", "offline")
    if host.in_maintenance:
        return HostVerdict(host, "draining (in maintenance): it takes no new desktops", "maintenance")
    used_vcpus, used_memory = load
    if host.cpus is None or host.memory_mib is None:
        free = float("inf")  # not measured yet: the host check fills these in
    else:
        allowed_vcpus = host.cpus * host.vcpu_overcommit
        allowed_memory = host.memory_mib * host.memory_overcommit
        if allowed_memory - used_memory < pool.memory_mib:
            return HostVerdict(host, f"full: memory ({used_memory} of {allowed_memory:.0f} MiB placed, "
                                     f"a desktop needs {pool.memory_mib} MiB)", "full_memory")
        if allowed_vcpus - used_vcpus < pool.vcpus:
            return HostVerdict(host, f"full: vCPUs ({used_vcpus} of {allowed_vcpus:g} placed, a desktop needs "
                                     f"{pool.vcpus})", "full_cpu")
        free = (allowed_memory - used_memory) / allowed_memory
    # Among equally free hosts (not measured yet), the one with less already placed on it.
    return HostVerdict(host, score=(free, -used_memory))


def pick_host(*, pool, among=None) -> Host | None:
    """The host with the most free memory (after overcommit) that can take one more desktop
    of `pool`; the pool's pinned host if it has one. None when no host has room. `among`
    narrows the choice (a queryset of hosts: a migration's possible destinations)."""
    best = None
    for verdict in placement_verdicts(pool=pool, among=among):
        if verdict.refusal is None and (best is None or verdict.score > best.score):
            best = verdict
    return best.host if best else None


def in_flight_on(*, host) -> int:
    return Desktop.objects.filter(host=host, state__in=(S.QUEUED, S.CLONING, S.STARTING, S.RECOMPOSING)).count()


def spares_of(*, pool):
    """Unassigned desktops of the pool that are ready or on their way."""
    return Desktop.objects.filter(pool=pool, user__isnull=True, state__in=SPARE_STATES)


def live_count(*, pool) -> int:
    return Desktop.objects.filter(pool=pool, state__in=LIVE_STATES).count()
