"""/metrics for Prometheus: read from the database at scrape time (the portal, the gateway tier
and the workers are separate processes; the rows are where their work meets), so every portal
process answers the same figures and nothing is lost when one restarts.

Durations (provisioning: a desktop's creation to its first `running`; live migrations) are
summaries of the last VDI_METRICS_WINDOW_MINUTES computed from DesktopEvent and LiveMigration
rows, as gauges by quantile: not histograms recorded in-process, which a prefork worker's
process could not expose.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Min, Q, Sum
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from broker.models import ConsoleSession, Desktop, DesktopEvent, DesktopState, Host, LiveMigration
from broker.selectors import host_loads

from .access import may_scrape

QUANTILES = (0.5, 0.9, 0.99)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def window() -> timedelta:
    return timedelta(minutes=float(getattr(settings, "VDI_METRICS_WINDOW_MINUTES", 60)))


class BrokerCollector:
    def collect(self):
        yield from self.desktops()
        yield from self.consoles()
        yield from self.hosts()
        yield from self.migrations()
        yield from self.provisioning()

    def desktops(self):
        by_state = GaugeMetricFamily("vdi_desktops", "Desktops (not deleted) by pool and state.",
                                     labels=["pool", "state"])
        rows = (Desktop.objects.exclude(state=DesktopState.DELETED).order_by()
                .values_list("pool__name", "state").annotate(n=Count("pk")))
        for pool, state, n in rows:
            by_state.add_metric([pool, state], n)
        yield by_state
        failures = CounterMetricFamily("vdi_desktop_failures", "Desktops that went to failed (events), by pool.",
                                       labels=["pool"])
        rows = (DesktopEvent.objects.filter(to_state=DesktopState.FAILED).order_by()
                .values_list("desktop__pool__name").annotate(n=Count("pk")))
        for pool, n in rows:
            failures.add_metric([pool], n)
        yield failures

    def consoles(self):
        now = timezone.now()
        open_consoles = GaugeMetricFamily("vdi_consoles_open", "Open console connections by pool and protocol.",
                                          labels=["pool", "protocol"])
        open_bytes = GaugeMetricFamily("vdi_consoles_open_bytes", "Bytes relayed so far by the open consoles.",
                                       labels=["direction"])
        rows = (ConsoleSession.objects.filter(closed_at__isnull=True).order_by()
                .values_list("desktop__pool__name", "protocol").annotate(n=Count("pk")))
        for pool, protocol, n in rows:
            open_consoles.add_metric([pool, protocol], n)
        yield open_consoles
        totals = ConsoleSession.objects.filter(closed_at__isnull=True).aggregate(
            to_client=Sum("bytes_to_client", default=0), to_desktop=Sum("bytes_to_desktop", default=0))
        open_bytes.add_metric(["to_client"], totals["to_client"])
        open_bytes.add_metric(["to_desktop"], totals["to_desktop"])
        yield open_bytes
        relayed = CounterMetricFamily("vdi_console_bytes", "Bytes relayed by every console, open and closed.",
                                      labels=["direction"])
        totals = ConsoleSession.objects.aggregate(to_client=Sum("bytes_to_client", default=0),
                                                  to_desktop=Sum("bytes_to_desktop", default=0))
        relayed.add_metric(["to_client"], totals["to_client"])
        relayed.add_metric(["to_desktop"], totals["to_desktop"])
        yield relayed
        sessions = CounterMetricFamily("vdi_console_sessions", "Console connections opened, ever.")
        sessions.add_metric([], ConsoleSession.objects.count())
        yield sessions
        recent = GaugeMetricFamily("vdi_console_sessions_recent",
                                   "Console connections opened within the metrics window.")
        recent.add_metric([], ConsoleSession.objects.filter(opened_at__gte=now - window()).count())
        yield recent

    def hosts(self):
        hosts = list(Host.objects.order_by("name"))
        loads = host_loads(hosts=hosts)
        up = GaugeMetricFamily("vdi_host_up", "1 when the host answered its last check.", labels=["host", "kind"])
        usable = GaugeMetricFamily("vdi_host_accepts_desktops", "1 when enabled, online and not draining.",
                                   labels=["host"])
        cpus = GaugeMetricFamily("vdi_host_cpus", "Physical CPUs the host reported.", labels=["host"])
        memory = GaugeMetricFamily("vdi_host_memory_mib", "Memory the host reported (MiB).", labels=["host"])
        cpu_limit = GaugeMetricFamily("vdi_host_vcpus_allowed", "CPUs times the vCPU overcommit.", labels=["host"])
        memory_limit = GaugeMetricFamily("vdi_host_memory_allowed_mib", "Memory times the memory overcommit.",
                                         labels=["host"])
        placed_vcpus = GaugeMetricFamily("vdi_host_placed_vcpus", "vCPUs of the desktops placed on the host.",
                                         labels=["host"])
        placed_memory = GaugeMetricFamily("vdi_host_placed_memory_mib", "Memory of the desktops placed (MiB).",
                                          labels=["host"])
        for host in hosts:
            up.add_metric([host.name, host.kind], 1 if host.is_online else 0)
            usable.add_metric([host.name], 1 if host.accepts_new_desktops else 0)
            vcpus, mib = loads.get(host.pk, (0, 0))
            placed_vcpus.add_metric([host.name], vcpus)
            placed_memory.add_metric([host.name], mib)
            if host.cpus is not None:
                cpus.add_metric([host.name], host.cpus)
                cpu_limit.add_metric([host.name], host.cpus * host.vcpu_overcommit)
            if host.memory_mib is not None:
                memory.add_metric([host.name], host.memory_mib)
                memory_limit.add_metric([host.name], host.memory_mib * host.memory_overcommit)
        yield from (up, usable, cpus, memory, cpu_limit, memory_limit, placed_vcpus, placed_memory)

    def migrations(self):
        by_state = GaugeMetricFamily("vdi_live_migrations", "Live migrations by state (rows kept as history).",
                                     labels=["state"])
        for state, n in LiveMigration.objects.order_by().values_list("state").annotate(n=Count("pk")):
            by_state.add_metric([state], n)
        yield by_state
        durations = [m.duration_s for m in LiveMigration.objects.filter(
            state=LiveMigration.State.COMPLETED, finished_at__gte=timezone.now() - window(),
            started_at__isnull=False).only("started_at", "finished_at")]
        yield from self._summary("vdi_live_migration_seconds", "Live migrations completed within the metrics window: "
                            "duration by quantile.", durations)

    def provisioning(self):
        """Creation to first `running`, for desktops that first ran within the window."""
        since = timezone.now() - window()
        rows = (DesktopEvent.objects.filter(to_state=DesktopState.RUNNING).order_by()
                .values("desktop").annotate(first=Min("created_at")).filter(first__gte=since)
                .annotate(created=F("desktop__created_at")).values_list("created", "first"))
        durations = [(first - created).total_seconds() for created, first in rows]
        yield from self._summary("vdi_provisioning_seconds", "Desktops that first ran within the metrics window: "
                            "creation (launch or spare) to running, by quantile.", durations)

    @staticmethod
    def _summary(name: str, documentation: str, values: list[float]):
        gauge = GaugeMetricFamily(name, documentation, labels=["quantile"])
        for q in QUANTILES:
            gauge.add_metric([str(q)], _quantile(values, q) if values else float("nan"))
        yield gauge
        count = GaugeMetricFamily(f"{name}_observations", f"How many values {name} summarises.")
        count.add_metric([], len(values))
        yield count


@never_cache
@require_GET
def metrics_view(request):
    if not may_scrape(request):
        return HttpResponse("Forbidden: not an allowed address, and no valid metrics token.\n", status=403,
                            content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
