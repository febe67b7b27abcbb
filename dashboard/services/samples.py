"""The writes of the dashboard: a sample of the site now, the hour roll-up and the pruning that
keep 30 days of charts small, a host's libvirt reading, and a failed task."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Avg, Sum
from django.utils import timezone

from broker.hypervisor import HypervisorError, driver_for_host

from .. import launches, selectors
from ..models import HostReading, Sample, TaskFailure

log = logging.getLogger(__name__)
GAUGES = ["consoles_open", "desktops_in_use", "desktops_running", "spares_ready", "vcpus_placed", "vcpus_allowed",
          "memory_placed_mib", "memory_allowed_mib"]


def sample_period() -> timedelta:
    return timedelta(seconds=settings.VDI_DASHBOARD_SAMPLE_SECONDS)


def take_sample(*, now=None, workers: list[str] | None = None) -> Sample:
    """The site now, and the launches since the previous sample (at most three periods back:
    after an outage the gap stays a gap). `workers`: the Celery workers that answered a ping
    (None: not asked)."""
    now = (now or timezone.now()).replace(microsecond=0)
    previous = Sample.objects.filter(resolution=Sample.Resolution.MINUTE, taken_at__lt=now).order_by("-taken_at") \
        .first()
    since = now - sample_period()
    if previous is not None and now - previous.taken_at <= 3 * sample_period():
        since = previous.taken_at
    timing = launches.launches_between(since, now)
    figures = {**selectors.site_gauges(), "launches": timing.count, "launch_p50_s": timing.quantile(0.5),
               "launch_p95_s": timing.quantile(0.95), "launches_timed": len(timing.durations),
               "period_seconds": int((now - since).total_seconds())}
    if workers is not None:
        figures.update(workers_alive=len(workers), worker_names=sorted(workers))
    sample, _created = Sample.objects.update_or_create(resolution=Sample.Resolution.MINUTE, taken_at=now,
                                                       defaults=figures)
    return sample


def roll_up_hours(*, now=None) -> int:
    """One hour sample for each full hour that has minute samples and no hour sample yet:
    gauges averaged, launches summed, launch times recomputed from the hour's launches
    (quantiles of quantiles would be wrong). Returns how many hours were rolled up."""
    now = now or timezone.now()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    last = Sample.objects.filter(resolution=Sample.Resolution.HOUR).order_by("-taken_at").first()
    first_minute = Sample.objects.filter(resolution=Sample.Resolution.MINUTE).order_by("taken_at").first()
    if first_minute is None:
        return 0
    start = last.taken_at if last else first_minute.taken_at.replace(minute=0, second=0, microsecond=0)
    done = 0
    while start + timedelta(hours=1) <= this_hour:
        end = start + timedelta(hours=1)
        minutes = Sample.objects.filter(resolution=Sample.Resolution.MINUTE, taken_at__gt=start, taken_at__lte=end)
        means = minutes.aggregate(n_launches=Sum("launches"), **{g: Avg(g) for g in GAUGES})
        if means["n_launches"] is not None:  # else no sample in the hour: leave a gap
            timing = launches.launches_between(start, end)
            Sample.objects.update_or_create(
                resolution=Sample.Resolution.HOUR, taken_at=end,
                defaults={**{g: means[g] for g in GAUGES}, "period_seconds": 3600, "launches": means["n_launches"],
                          "launch_p50_s": timing.quantile(0.5), "launch_p95_s": timing.quantile(0.95),
                          "launches_timed": len(timing.durations)})
            done += 1
        start = end
    return done


def prune(*, now=None) -> dict[str, int]:
    """Drop what the charts no longer show."""
    now = now or timezone.now()
    days = timedelta(days=1)
    deleted = {
        "minute samples": Sample.objects.filter(
            resolution=Sample.Resolution.MINUTE,
            taken_at__lt=now - settings.VDI_DASHBOARD_MINUTE_SAMPLES_DAYS * days).delete()[0],
        "hour samples": Sample.objects.filter(
            resolution=Sample.Resolution.HOUR,
            taken_at__lt=now - settings.VDI_DASHBOARD_HOUR_SAMPLES_DAYS * days).delete()[0],
        # Rates need the last two readings of a host; an hour of them is plenty.
        "host readings": HostReading.objects.filter(taken_at__lt=now - timedelta(hours=1)).delete()[0],
        "task failures": TaskFailure.objects.filter(failed_at__lt=now - 7 * days).delete()[0],
    }
    return deleted


def record_host_reading(*, host, now=None) -> HostReading:
    """Ask the host's libvirt what it is using (the one door: its driver) and keep the answer;
    a host that does not answer gets a reading that says why."""
    now = now or timezone.now()
    try:
        usage = driver_for_host(host).host_usage(storage_pool=host.storage_pool)
    except HypervisorError as exc:
        return HostReading.objects.create(host=host, taken_at=now, error=str(exc)[:1000])
    return HostReading.objects.create(
        host=host, taken_at=now, cpu_busy_ns=usage.cpu_busy_ns, cpu_total_ns=usage.cpu_total_ns,
        memory_total_kib=usage.memory_total_kib, memory_available_kib=usage.memory_available_kib,
        storage_capacity_bytes=usage.storage_capacity_bytes, storage_allocation_bytes=usage.storage_allocation_bytes,
        storage_available_bytes=usage.storage_available_bytes, disk_read_bytes=usage.disk_read_bytes,
        disk_write_bytes=usage.disk_write_bytes, net_rx_bytes=usage.net_rx_bytes, net_tx_bytes=usage.net_tx_bytes,
        running_domains=usage.running_domains)


def record_task_failure(*, task_name: str, task_id: str, exception) -> TaskFailure:
    error = f"{exception.__class__.__name__}: {exception}" if exception is not None else ""
    return TaskFailure.objects.create(task_name=task_name[:200], task_id=task_id[:64], error=error[:500])
