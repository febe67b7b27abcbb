"""The reads of the dashboard: every figure it shows, each in a constant number of queries
however many hosts, pools and desktops there are (the dashboard polls them every few seconds).

Definitions are the admin's (broker/admin.py's host and pool lists) and the placement's
(broker/selectors.py): a desktop counts against its host's vCPUs and memory in the states that
place it there (PLACED_STATES); a pool's spares are its desktops without a user that are
running or powered off; in use, its live desktops with a user.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Q, Sum, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from broker.models import ConsoleSession, Desktop, DesktopState, Host, Pool
from broker.models.desktops import LIVE_STATES, PROVISIONING_STATES
from broker.selectors import PLACED_STATES, host_loads

from .models import HostReading, Sample, TaskFailure

S = DesktopState
SPARE_READY_STATES = (S.RUNNING, S.STOPPED)


def _host_status(host: Host) -> str:
    if host.fenced_at:
        return "fenced"
    if not host.is_enabled:
        return "disabled"
    if not host.is_online:
        return "offline"
    return "draining" if host.in_maintenance else "online"


def _latest_readings(host_ids) -> dict[int, list[HostReading]]:
    """The last two readings of each host, newest first."""
    ranked = (HostReading.objects.filter(host__in=host_ids, taken_at__gte=timezone.now() - timedelta(hours=1))
              .annotate(rank=Window(RowNumber(), partition_by=[F("host_id")], order_by=F("taken_at").desc()))
              .filter(rank__lte=2))
    readings: dict[int, list[HostReading]] = defaultdict(list)
    for reading in ranked:
        readings[reading.host_id].append(reading)
    for rows in readings.values():
        rows.sort(key=lambda r: r.taken_at, reverse=True)
    return readings


def _rate(new: HostReading, old: HostReading | None, field: str) -> float | None:
    if old is None or getattr(new, field) is None or getattr(old, field) is None:
        return None
    seconds = (new.taken_at - old.taken_at).total_seconds()
    change = getattr(new, field) - getattr(old, field)
    if seconds <= 0 or change < 0:  # a domain stopped (its counters went with it): no rate this time
        return None
    return change / seconds


def host_usage(readings: list[HostReading]) -> dict | None:
    """CPU %, memory and storage use, and disk and network rates from a host's last two readings."""
    if not readings:
        return None
    new = readings[0]
    if new.error:
        return {"read_at": new.taken_at.isoformat(), "error": new.error}
    old = next((r for r in readings[1:] if not r.error), None)
    cpu = None
    if old is not None and new.cpu_total_ns is not None and old.cpu_total_ns is not None \
            and new.cpu_total_ns > old.cpu_total_ns:
        cpu = round(100 * (new.cpu_busy_ns - old.cpu_busy_ns) / (new.cpu_total_ns - old.cpu_total_ns), 1)
    memory_used = None
    if new.memory_total_kib and new.memory_available_kib is not None:
        memory_used = round((new.memory_total_kib - new.memory_available_kib) / 1024)
    return {
        "read_at": new.taken_at.isoformat(), "error": "",
        "cpu_percent": cpu,
        "memory_used_mib": memory_used,
        "memory_total_mib": round(new.memory_total_kib / 1024) if new.memory_total_kib else None,
        "storage_used_bytes": new.storage_allocation_bytes,
        "storage_capacity_bytes": new.storage_capacity_bytes,
        "storage_available_bytes": new.storage_available_bytes,
        "disk_read_bps": _rate(new, old, "disk_read_bytes"),
        "disk_write_bps": _rate(new, old, "disk_write_bytes"),
        "net_rx_bps": _rate(new, old, "net_rx_bytes"),
        "net_tx_bps": _rate(new, old, "net_tx_bytes"),
        "running_domains": new.running_domains,
    }


def storage_commitments() -> dict[int, int]:
    """Bytes the desktops of each host may grow to: the virtual size of their image version (a
    linked clone grows up to it) plus their data disk if they have one, for every desktop that holds (or
    is about to hold) disks there. Farms' sessions have no disks."""
    rows = (Desktop.objects.filter(host__isnull=False, state__in=LIVE_STATES).exclude(pool__kind=Pool.Kind.FARM)
            .order_by().values("host").annotate(system=Sum("image_version__size_bytes"),
                                                data_gib=Sum("pool__data_disk_gib", filter=~Q(data_volume_name="")))
            .values_list("host", "system", "data_gib"))
    return {host_id: (system or 0) + (data_gib or 0) * 2**30 for host_id, system, data_gib in rows}


def host_figures() -> list[dict]:
    """Per host: placed (committed) and allowed vCPUs and memory, storage committed, desktops by
    state, and what its libvirt last said it uses."""
    hosts = list(Host.objects.order_by("name"))
    loads = host_loads(hosts=hosts)
    storage = storage_commitments()
    by_state: dict[int, dict[str, int]] = defaultdict(dict)
    rows = (Desktop.objects.filter(host__isnull=False).exclude(state=S.DELETED).order_by()
            .values_list("host", "state").annotate(n=Count("pk")))
    for host_id, state, n in rows:
        by_state[host_id][state] = n
    readings = _latest_readings([host.pk for host in hosts])
    figures = []
    for host in hosts:
        vcpus, memory = loads.get(host.pk, (0, 0))
        figures.append({
            "id": host.pk, "name": host.name, "kind": host.kind, "status": _host_status(host),
            "last_error": host.last_error[:300] if not host.is_online else "",
            "cpus": host.cpus, "memory_mib": host.memory_mib,
            "vcpus_placed": vcpus,
            "vcpus_allowed": round(host.cpus * host.vcpu_overcommit, 1) if host.cpus else None,
            "memory_placed_mib": memory,
            "memory_allowed_mib": round(host.memory_mib * host.memory_overcommit) if host.memory_mib else None,
            "storage_committed_bytes": storage.get(host.pk, 0),
            "sessions_running": host.sessions_running,
            "desktops_by_state": by_state.get(host.pk, {}),
            "usage": host_usage(readings.get(host.pk, [])) if not host.is_session_host else None,
        })
    return figures


def pool_figures(*, now=None) -> list[dict]:
    """Per pool: spares ready, in use, provisioning, failed, and whether it is backing off."""
    now = now or timezone.now()
    live = Q(desktops__state__in=LIVE_STATES)
    pools = (Pool.objects.order_by("display_name").annotate(
        spares_ready=Count("desktops", filter=Q(desktops__user__isnull=True,
                                                desktops__state__in=SPARE_READY_STATES)),
        in_use=Count("desktops", filter=live & Q(desktops__user__isnull=False)),
        provisioning=Count("desktops", filter=Q(desktops__state__in=PROVISIONING_STATES)),
        failing=Count("desktops", filter=Q(desktops__state=S.FAILED)),
        live=Count("desktops", filter=live),
    ))
    return [{
        "id": pool.pk, "name": pool.name, "display_name": pool.display_name, "kind": pool.kind,
        "is_enabled": pool.is_enabled, "min_spares": pool.min_spares, "max_desktops": pool.max_desktops,
        "spares_ready": pool.spares_ready, "in_use": pool.in_use, "provisioning": pool.provisioning,
        "failing": pool.failing, "live": pool.live,
        "backoff_until": pool.backoff_until.isoformat() if pool.backoff_until and pool.backoff_until > now else None,
        "consecutive_failures": pool.consecutive_failures,
        "last_reconciled_at": pool.last_reconciled_at.isoformat() if pool.last_reconciled_at else None,
    } for pool in pools]


def activity() -> dict:
    """Desktops and sessions in use now, and the consoles open to them."""
    consoles = dict(ConsoleSession.objects.filter(closed_at__isnull=True).order_by()
                    .values_list("protocol").annotate(n=Count("pk")))
    in_use = Desktop.objects.filter(user__isnull=False, state__in=LIVE_STATES).aggregate(
        desktops=Count("pk", filter=~Q(pool__kind=Pool.Kind.FARM)),
        farm_sessions=Count("pk", filter=Q(pool__kind=Pool.Kind.FARM)),
        running=Count("pk", filter=Q(state=S.RUNNING)))
    return {"consoles_open": sum(consoles.values()), "consoles_by_protocol": consoles,
            "desktops_in_use": in_use["desktops"], "farm_sessions": in_use["farm_sessions"],
            "in_use_running": in_use["running"]}


def site_gauges() -> dict:
    """The figures a sample stores, for the whole site (hypervisors' capacity only)."""
    hosts = list(Host.objects.filter(kind=Host.Kind.HYPERVISOR, is_enabled=True))
    loads = host_loads(hosts=hosts)
    counts = Desktop.objects.aggregate(
        running=Count("pk", filter=Q(state=S.RUNNING)),
        in_use=Count("pk", filter=Q(user__isnull=False, state__in=LIVE_STATES)),
        spares=Count("pk", filter=Q(user__isnull=True, state__in=SPARE_READY_STATES) & ~Q(pool__kind=Pool.Kind.FARM)))
    return {
        "consoles_open": ConsoleSession.objects.filter(closed_at__isnull=True).count(),
        "desktops_in_use": counts["in_use"], "desktops_running": counts["running"], "spares_ready": counts["spares"],
        "vcpus_placed": sum(vcpus for vcpus, _ in loads.values()),
        "memory_placed_mib": sum(memory for _, memory in loads.values()),
        "vcpus_allowed": sum(h.cpus * h.vcpu_overcommit for h in hosts if h.cpus),
        "memory_allowed_mib": sum(h.memory_mib * h.memory_overcommit for h in hosts if h.memory_mib),
    }


def queue_depths(hosts) -> dict[str, int | None]:
    """Messages waiting in each Celery queue (the central one and every host agent's), read
    from Redis; None for all when Redis does not answer."""
    import redis

    from api.health import _redis_url

    names = [settings.CELERY_TASK_DEFAULT_QUEUE] + sorted({h.task_queue for h in hosts if h.task_queue})
    timeout = settings.VDI_READYZ_TIMEOUT_SECONDS
    client = redis.Redis.from_url(_redis_url(settings.CELERY_BROKER_URL), socket_connect_timeout=timeout,
                                  socket_timeout=timeout)
    try:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        return dict(zip(names, pipe.execute()))
    except redis.RedisError:
        return {name: None for name in names}
    finally:
        client.close()


def celery_state(*, now=None) -> dict:
    now = now or timezone.now()
    hosts = Host.objects.filter(is_enabled=True).only("name", "kind", "has_own_agent")
    last_ping = (Sample.objects.filter(resolution=Sample.Resolution.MINUTE, workers_alive__isnull=False)
                 .order_by("-taken_at").first())
    failures = TaskFailure.objects.filter(failed_at__gte=now - timedelta(hours=24))
    by_task = (failures.order_by().values("task_name").annotate(n=Count("pk"), hour=Count(
        "pk", filter=Q(failed_at__gte=now - timedelta(hours=1)))).order_by("-n")[:8])
    latest = failures.order_by("-failed_at").first()
    return {
        "queues": queue_depths(list(hosts)),
        "workers_alive": last_ping.workers_alive if last_ping else None,
        "worker_names": last_ping.worker_names if last_ping else [],
        "workers_seen_at": last_ping.taken_at.isoformat() if last_ping else None,
        "failed_tasks_hour": sum(row["hour"] for row in by_task),
        "failed_tasks_day": sum(row["n"] for row in by_task),
        "failed_by_task": [{"task": row["task_name"], "day": row["n"], "hour": row["hour"]} for row in by_task],
        "last_failure": {"task": latest.task_name, "at": latest.failed_at.isoformat(), "error": latest.error}
        if latest else None,
    }


def housekeeping() -> dict:
    """When the periodic repair pass last ran, and the last directory sync."""
    from django.db.models import Max

    from identity.selectors import last_sync_run

    reconciled = Pool.objects.aggregate(last=Max("last_reconciled_at"))["last"]
    checked = Host.objects.aggregate(last=Max("last_checked_at"))["last"]
    run = last_sync_run()
    sync = None
    if run is not None:
        sync = {"status": run.status, "at": (run.finished_at or run.started_at or run.created_at).isoformat(),
                "users_seen": run.users_seen, "errors": len(run.errors or [])}
    return {"last_reconciliation": reconciled.isoformat() if reconciled else None,
            "last_host_check": checked.isoformat() if checked else None,
            "directory_sync": sync, "directory_enabled": bool(getattr(settings, "LDAP_ENABLED", False))}


def live_figures() -> dict:
    """Everything the dashboard's numbers show (the JSON its page polls)."""
    return {"at": timezone.now().isoformat(), "hosts": host_figures(), "pools": pool_figures(),
            "activity": activity(), "celery": celery_state(), "housekeeping": housekeeping()}


SERIES_FIELDS = ["consoles_open", "desktops_in_use", "desktops_running", "spares_ready", "launches", "launch_p50_s",
                 "launch_p95_s", "vcpus_placed", "vcpus_allowed", "memory_placed_mib", "memory_allowed_mib"]
RANGES = {"24h": (Sample.Resolution.MINUTE, timedelta(hours=24)), "30d": (Sample.Resolution.HOUR, timedelta(days=30))}


def chart_series(*, span: str, now=None) -> dict:
    """Columns for the charts: times (Unix seconds) and one list per figure, oldest first."""
    now = now or timezone.now()
    resolution, length = RANGES[span]
    rows = (Sample.objects.filter(resolution=resolution, taken_at__gt=now - length, taken_at__lte=now)
            .order_by("taken_at").values_list("taken_at", *SERIES_FIELDS))
    columns = {"t": []} | {name: [] for name in SERIES_FIELDS}
    for taken_at, *values in rows:
        columns["t"].append(int(taken_at.timestamp()))
        for name, value in zip(SERIES_FIELDS, values):
            columns[name].append(value)
    return {"span": span, "resolution": resolution, "from": int((now - length).timestamp()),
            "to": int(now.timestamp()), "series": columns}
