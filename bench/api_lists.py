"""API list endpoints at scale: GET /api/v1/<resource>/ with 10,000 desktops (issue 12).

    .venv/bin/python bench/api_lists.py [--desktops 10000] [--hosts 50] [--repeats 5]

Builds the site of bench/scale.py (its own PostgreSQL database, vdi_api_bench, dropped at the
end; test-driver hosts only) and times every list endpoint through DRF's test client with a
token: the default page (50 rows), a page of 500, and the default page as an operator scoped to
one pool; median of --repeats after one untimed warm-up, each a fresh database connection
(DATABASE_CONN_MAX_AGE=0, as the portal runs), and the SQL queries of one more request. The
table goes to stdout, its last line is one JSON object; progress to stderr. Target: < 300 ms.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import scale  # noqa: E402
from bench import launch  # noqa: E402
from bench.launch import progress  # noqa: E402

RESOURCES = ["pools", "images", "image-versions", "hosts", "desktops", "sessions", "entitlements",
             "desktop-events", "broker-events", "live-migrations"]
TARGET_MS = 300.0


def parse_args():
    return scale.request_bench_args(__doc__.split("\n\n")[0], database="vdi_api_bench", seed=10)


def timed(client, url: str, repeats: int) -> tuple[float, int, int]:
    return scale.timed_get(client, url, repeats, measure=lambda response: response.json()["count"])


def run(args, var_dir: Path, state: dict):
    scale.configure_environment(args, var_dir)
    scale.create_database(args)
    state["database"] = True
    import django

    django.setup()
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from api.models import OperatorScope
    from broker.models import BrokerEvent, Desktop, LiveMigration

    t0 = time.perf_counter()
    progress(f"building the site: {args.hosts} hosts, {args.desktops} desktops")
    site = scale.build_site(args, var_dir, random.Random(args.seed))
    # A broker event per host and a migration per 20 running desktops: rows for those lists too.
    BrokerEvent.objects.bulk_create(BrokerEvent(kind="host", host=h, message="checked") for h in site.hosts)
    LiveMigration.objects.bulk_create(
        LiveMigration(desktop=d, source_id=d.host_id, reason="admin", state="completed")
        for d in Desktop.objects.filter(state="running", host__isnull=False)[::20])
    progress(f"site built in {time.perf_counter() - t0:.1f} s")

    root = APIClient()
    root.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=site.admin).key}")
    from django.contrib.auth import get_user_model

    operator_user = get_user_model().objects.create_user("bench-operator")
    OperatorScope.objects.create(user=operator_user).pools.add(site.pools[0])
    operator = APIClient()
    operator.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=operator_user).key}")

    results = {}
    for resource in RESOURCES:
        progress(f"GET /api/v1/{resource}/")
        results[resource] = {
            "admin_50": timed(root, f"/api/v1/{resource}/", args.repeats),
            "admin_500": timed(root, f"/api/v1/{resource}/?limit=500", args.repeats),
            "operator_50": timed(operator, f"/api/v1/{resource}/", args.repeats),
        }
    lines = [f"API list endpoints, {site.desktops} desktops, {len(site.hosts)} hosts, {len(site.pools)} pools "
             f"(median of {args.repeats}; ms / SQL queries / rows in the list)",
             f"{'endpoint':<28}{'admin, 50 rows':>22}{'admin, 500 rows':>22}{'operator, 50 rows':>22}"]
    for resource, cells in results.items():
        lines.append(f"/api/v1/{resource + '/':<20}" + "".join(
            f"{f'{ms:.1f} ms / {q} q / {rows}':>22}" for ms, q, rows in cells.values()))
    worst = max(cell[0] for cells in results.values() for cell in cells.values())
    worst_default = max(max(cells["admin_50"][0], cells["operator_50"][0]) for cells in results.values())
    lines.append(f"slowest default page: {worst_default:.1f} ms (target < {TARGET_MS:.0f} ms); "
                 f"slowest of all: {worst:.1f} ms")
    summary = {"desktops": site.desktops, "slowest_default_page_ms": round(worst_default, 1),
               "slowest_ms": round(worst, 1), "target_ms": TARGET_MS,
               "ms": {r: {k: round(v[0], 1) for k, v in cells.items()} for r, cells in results.items()}}
    return "\n".join(lines), summary


def main() -> int:
    args = parse_args()
    return launch.run_bench(run, args=args, temp_prefix=scale.NAME_PREFIX, report_failure=None,
                            clean_up=lambda state, var_dir: scale.clean_up(args, state, var_dir))


if __name__ == "__main__":
    sys.exit(main())
