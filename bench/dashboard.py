"""The admin dashboard at scale: its page and its JSON with 10,000 desktops (issue 12).

    .venv/bin/python bench/dashboard.py [--desktops 10000] [--hosts 50] [--repeats 5]

Builds the site of bench/scale.py (its own PostgreSQL database, vdi_dashboard_bench, dropped at
the end; test-driver hosts only), adds what a month of running leaves for the dashboard (a day
of minute samples, 30 days of hour samples, two libvirt readings of every host taken through
the driver, a few failed tasks), and times as a logged-in superuser through Django's test
Client: the dashboard page (it renders the live figures into itself), the live JSON its script
polls every few seconds, and the chart series of 24 hours and 30 days. Median of --repeats
after one untimed warm-up, each a fresh database connection (DATABASE_CONN_MAX_AGE=0, as the
portal runs), and the SQL queries of one more request. The table goes to stdout, its last line
is one JSON object; progress to stderr. Target: < 300 ms each.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import launch, scale  # noqa: E402
from bench.launch import progress  # noqa: E402

TARGET_MS = 300.0
URLS = {
    "page": "/admin/dashboard/",
    "live.json": "/admin/dashboard/live.json",
    "series 24h": "/admin/dashboard/series.json?span=24h",
    "series 30d": "/admin/dashboard/series.json?span=30d",
}


def parse_args():
    return scale.request_bench_args(__doc__.split("\n\n")[0], database="vdi_dashboard_bench", seed=12)


def timed(client, url: str, repeats: int) -> tuple[float, int, int]:
    return scale.timed_get(client, url, repeats, measure=lambda response: len(response.content))


def add_history(site) -> dict:
    """A day of samples every minute, a month of hour samples, two readings of every host."""
    from django.utils import timezone

    from dashboard.models import Sample, TaskFailure
    from dashboard.services.samples import record_host_reading, take_sample

    now = timezone.now().replace(second=0, microsecond=0)
    t0 = time.perf_counter()
    take_sample(now=now, workers=["bench@localhost"])  # one real sample: its cost with 10,000 desktops
    sample_ms = 1000 * (time.perf_counter() - t0)
    rng = random.Random(5)
    Sample.objects.bulk_create(
        [Sample(resolution="minute", taken_at=now - timedelta(minutes=m), period_seconds=60,
                consoles_open=rng.randint(2000, 4000), desktops_in_use=rng.randint(4000, 6000),
                launches=rng.randint(0, 40), launch_p50_s=rng.uniform(1, 5), launch_p95_s=rng.uniform(10, 40),
                vcpus_placed=rng.randint(8000, 12000), vcpus_allowed=24000,
                memory_placed_mib=rng.randint(10**7, 2 * 10**7), memory_allowed_mib=4 * 10**7)
         for m in range(1, 24 * 60 + 60)]
        + [Sample(resolution="hour", taken_at=now.replace(minute=0) - timedelta(hours=h), period_seconds=3600,
                  consoles_open=rng.randint(2000, 4000), launches=rng.randint(100, 2000), launch_p50_s=3,
                  launch_p95_s=20,
                  vcpus_placed=10000, vcpus_allowed=24000, memory_placed_mib=10**7, memory_allowed_mib=4 * 10**7)
           for h in range(1, 24 * 35)], batch_size=2000)
    for host in site.hosts:
        record_host_reading(host=host, now=now - timedelta(seconds=60))
        record_host_reading(host=host, now=now)
    TaskFailure.objects.bulk_create(TaskFailure(task_name=f"broker.tasks.task_{i % 4}", error="HypervisorError: x")
                                    for i in range(40))
    return {"sample_ms": sample_ms}


def run(args, var_dir: Path, state: dict):
    scale.configure_environment(args, var_dir)
    scale.create_database(args)
    state["database"] = True
    import django

    django.setup()

    t0 = time.perf_counter()
    progress(f"building the site: {args.hosts} hosts, {args.desktops} desktops")
    site = scale.build_site(args, var_dir, random.Random(args.seed))
    extra = add_history(site)
    progress(f"site built in {time.perf_counter() - t0:.1f} s")

    client = scale.admin_client(site)
    results = {}
    for name, url in URLS.items():
        progress(f"GET {url}")
        results[name] = timed(client, url, args.repeats)
    from dashboard.models import Sample

    minutes = Sample.objects.filter(resolution="minute").count()
    hours = Sample.objects.filter(resolution="hour").count()
    lines = [f"Admin dashboard, {site.desktops} desktops, {len(site.hosts)} hosts, {len(site.pools)} pools, "
             f"{minutes} minute and {hours} hour samples (median of {args.repeats})",
             f"{'request':<16}{'ms':>10}{'SQL queries':>14}{'bytes':>12}"]
    for name, (ms, queries, size) in results.items():
        lines.append(f"{name:<16}{ms:>10.1f}{queries:>14}{size:>12}")
    lines.append(f"one sample taken (the periodic task's own work): {extra['sample_ms']:.1f} ms")
    worst = max(ms for ms, _q, _s in results.values())
    lines.append(f"slowest: {worst:.1f} ms (target < {TARGET_MS:.0f} ms)")
    summary = {"desktops": site.desktops, "hosts": len(site.hosts), "slowest_ms": round(worst, 1),
               "target_ms": TARGET_MS, "sample_ms": round(extra["sample_ms"], 1),
               "ms": {name: round(ms, 1) for name, (ms, _q, _s) in results.items()},
               "queries": {name: q for name, (_ms, q, _s) in results.items()}}
    return "\n".join(lines), summary


def main() -> int:
    args = parse_args()
    return launch.run_bench(run, args=args, temp_prefix=scale.NAME_PREFIX, report_failure=None,
                            clean_up=lambda state, var_dir: scale.clean_up(args, state, var_dir))


if __name__ == "__main__":
    sys.exit(main())
