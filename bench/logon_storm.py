"""Logon storm benchmark (issue 11): N employees log in and open their desktop within S seconds,
through the real portal over HTTP and websockets.

    .venv/bin/python bench/logon_storm.py [--users 1000] [--within 60] [--backend cheap|tcg]
    .venv/bin/python bench/logon_storm.py --soak MINUTES [--soak-users 4]

Each simulated browser (bench/logon_storm_clients.py) does what a person's browser does on the
portal's pages: login page, directory (LDAP) login, home, Launch (and the desktop page), the
launch progress websocket until ready, the console ticket, the console websocket with the
page's Origin and login cookie, noVNC's RFB opening up to the desktop's ServerInit. Users
arrive evenly spread over --within seconds; their consoles stay open until the last user is
in (people keep working), then all close. Per phase: p50/p95/p99; errors with reasons;
double assignments (a desktop that two users got, a user with two desktops: from what the
browsers were given and from the database's rows and events); database queries per launch.

The processes are the production layout of docs/production.md: the portal with one process
per core (`python -m config.serve config.asgi:application --workers N`: uvicorn, the console
gateway included, 24 pooled PostgreSQL connections per process; --portal-workers to change)
and one Celery worker with beat (prefork, concurrency 4, as scripts/run.sh starts it).
Everything is this bench's own: PostgreSQL database vdi_storm_bench on 127.0.0.1:5432
(created, dropped at the end), Redis database 13 (flushed before and after),
a slapd on loopback with N+1 accounts in one group entitled to a floating pool (accounts made
by the directory sync beforehand, as its periodic run does), a temporary VDI_VAR_DIR.

Backends:
  cheap  N+1 spares already running on libvirt test-driver hosts (100 desktops per host; each
         process that opens such a URI has its own copy of the host), each desktop's VNC port
         a small asyncio RFB server in this process (one port per desktop; accepts any VNC
         password answer, sends a 1024x768 ServerInit). Shortcut, said plainly: the test driver
         cannot set a console password (no virDomainUpdateDeviceFlags), so in the portal that
         one libvirt call returns at once on test-driver hosts (bench/logon_storm_portal.py);
         the live definition is still read through libvirt for the port.
  tcg    real TCG guests of the golden image on this machine's libvirtd (qemu:///system),
         N+1 spares made by the pool manager before the clock (names vdistorm-*, removed at
         the end): the ticket sets the one-time password on QEMU, the gateway logs in to
         QEMU's VNC server.

Reference, same run, before the storm: a bare ASGI "hello" app served by config.serve with the
same uvicorn options, hit by the same arrival rate, each user making as many requests as a
storm user's HTTP phases (8), for --reference-seconds: what the HTTP stack alone costs here.

Queries per launch: counted with Django's CaptureQueriesContext in this process, after the
storm, for one more user (the N+1th account and spare): the same views through Django's test
Client (login, home, launch + desktop page, one status read standing in for the progress
websocket's read, ticket), and the gateway's admission (its one database trip, replayed with
the same functions). PostgreSQL here has no pg_stat_statements.

--soak MINUTES (backend tcg unless --backend cheap is given; the test driver keeps no state
across processes, so only real guests show leaked domains and volumes): --soak-users users
each loop launch, type a few keys into the console, log off (End session, then log out), come
back. The floating pool wipes each desktop at log off and the pool manager makes a new spare.
Counts and RSS are read after one untimed warm-up cycle per user and again at the end, once
the pool has settled: domains and volumes, desktop rows per state, open console session rows,
unexpired console tickets, login sessions, connections open at the portal, and the resident
memory of the portal (gateway included) and the worker (with its children and beat).

Progress to stderr; the table to stdout, its last line one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is sys.path[0] as a script

from bench import logon_storm_world as w  # noqa: E402
from bench.launch import BenchAborted, progress  # noqa: E402
from bench.logon_storm_clients import PHASES, Browser, Journey, hello_requests  # noqa: E402

TARGETS = {"users": 1000, "within_s": 60, "phase_p99_s": 1.0, "errors": 0, "double_assignments": 0,
           "soak_rss_growth_percent": 10}
HTTP_REQUESTS_PER_USER = 8  # login page, login, home, launch, desktop page, ticket (+ redirects' GETs)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", "-n", type=int, default=1000, help="users in the storm (default 1000)")
    parser.add_argument("--within", type=float, default=60, help="seconds over which they arrive (default 60)")
    parser.add_argument("--backend", choices=["cheap", "tcg"], help="default: cheap; with --soak: tcg")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="soak mode instead of the storm")
    parser.add_argument("--soak-users", type=int, default=4, help="users looping in the soak (default 4)")
    parser.add_argument("--reference-seconds", type=float, default=10,
                        help="length of the hello reference at the storm's arrival rate (default 10; 0: none)")
    parser.add_argument("--portal-workers", type=int, default=os.cpu_count() or 1,
                        help="uvicorn --workers of the portal (default: one per core, the production "
                             "layout of docs/production.md; make run starts 1)")
    parser.add_argument("--image", help="golden image for --backend tcg (default bench/launch.py's)")
    args = parser.parse_args()
    args.backend = args.backend or ("tcg" if args.soak else "cheap")
    if args.users < 1 or args.within <= 0:
        parser.error("--users must be at least 1 and --within positive")
    return args


def percentile(values, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def together(coroutines):
    return await asyncio.gather(*coroutines)


# -- the storm -----------------------------------------------------------------------------------


async def storm(world: w.World, users: list[int]) -> tuple[list[Journey], float, list[Browser]]:
    """Every user arrives at its moment, does the journey, keeps its console open."""
    browsers = [Browser("127.0.0.1", world.port, w.username_of(i), w.password_of(i)) for i in users]
    journeys = [Journey(user=w.username_of(i)) for i in users]
    spacing = world.within / len(users)
    t0 = time.perf_counter()

    async def arrive(k: int):
        await asyncio.sleep(max(0.0, t0 + k * spacing - time.perf_counter()))
        await browsers[k].journey(journeys[k])

    done = 0

    async def counted(k):
        nonlocal done
        await arrive(k)
        done += 1
        if done % max(1, len(users) // 10) == 0:
            progress(f"  {done}/{len(users)} users through")

    await asyncio.gather(*(counted(k) for k in range(len(users))))
    return journeys, time.perf_counter() - t0, browsers


async def reference(world: w.World, var_dir: Path, args) -> list[float]:
    """The bare hello app at the storm's arrival rate: per-request latencies."""
    port = w.free_port()
    process = w._spawn(var_dir / "hello.log", [str(w.BIN / "python"), "-m", "config.serve",
                                               "bench.logon_storm_portal:hello", "--host", "127.0.0.1",
                                               "--port", str(port)])
    try:
        for _ in range(100):
            try:
                await hello_requests("127.0.0.1", port, 1)
                break
            except OSError:
                await asyncio.sleep(0.1)
        rate = args.users / args.within
        count = max(1, min(args.users, int(rate * args.reference_seconds)))
        spacing = 1 / rate
        t0 = time.perf_counter()

        async def one(k):
            await asyncio.sleep(max(0.0, t0 + k * spacing - time.perf_counter()))
            return await hello_requests("127.0.0.1", port, HTTP_REQUESTS_PER_USER)

        results = await asyncio.gather(*(one(k) for k in range(count)), return_exceptions=True)
        return [t for r in results if isinstance(r, list) for t in r]
    finally:
        process.terminate()
        process.wait(10)


def double_assignments(world: w.World, journeys: list[Journey], since) -> dict:
    """Desktops that went to two users, users with two desktops: as the browsers saw it, and as
    the rows and their events say."""
    from django.db.models import Count

    from broker.models import Desktop, DesktopEvent

    by_desktop = defaultdict(set)
    by_user = defaultdict(set)
    for j in journeys:
        if j.desktop_id is not None:
            by_desktop[j.desktop_id].add(j.user)
            by_user[j.user].add(j.desktop_id)
    seen_desktops = sum(1 for users in by_desktop.values() if len(users) > 1)
    seen_users = sum(1 for ids in by_user.values() if len(ids) > 1)
    live = Desktop.objects.filter(pool=world.pool).exclude(state__in=["deleted", "deleting"])
    row_users = live.filter(user__isnull=False).values("user").annotate(n=Count("id")).filter(n__gt=1).count()
    assigned = Counter(DesktopEvent.objects.filter(desktop__pool=world.pool, created_at__gte=since,
                                                   message__startswith="assigned to ")
                       .values_list("desktop_id", flat=True))
    event_desktops = sum(1 for n in assigned.values() if n > 1)
    return {"desktop_two_users_seen": seen_desktops, "user_two_desktops_seen": seen_users,
            "user_two_live_rows": row_users, "desktop_assigned_twice_events": event_desktops,
            "total": seen_desktops + seen_users + row_users + event_desktops}


def queries_per_launch(world: w.World, index: int) -> dict[str, int]:
    """One more user's launch through the same views, queries counted per phase (see above)."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from broker.console import sessions as console_sessions
    from broker.console import tickets
    from broker.console.login import login_from_cookie_header

    if world.backend == "cheap":
        from bench import logon_storm_portal

        logon_storm_portal.patch()
    client = Client(HTTP_HOST=f"127.0.0.1:{world.port}")
    origin = world.base_url
    counts = {}

    def counted(phase, call):
        with CaptureQueriesContext(connection) as captured:
            response = call()
        counts[phase] = counts.get(phase, 0) + len(captured)
        if os.environ.get("STORM_SQL"):
            for query in captured.captured_queries:
                print(f"  {phase}: {query['sql'][:220]}", file=sys.stderr)
        return response

    counted("login_page", lambda: client.get("/login/"))
    answer = counted("login", lambda: client.post("/login/", {"username": w.username_of(index),
                                                               "password": w.password_of(index)}))
    if answer.status_code != 302:
        raise BenchAborted(f"query count: login answered {answer.status_code}")
    counted("home", lambda: client.get("/"))
    answer = counted("launch", lambda: client.post(f"/pools/{world.pool.pk}/launch/"))
    location = answer["Location"]
    counted("launch", lambda: client.get(location))
    desktop_id = int(location.strip("/").split("/")[-1])
    counted("progress", lambda: client.get(f"/desktops/{desktop_id}/status/"))
    answer = counted("ticket", lambda: client.post(f"/desktops/{desktop_id}/console-ticket/", HTTP_ORIGIN=origin))
    if answer.status_code != 200:
        raise BenchAborted(f"query count: ticket answered {answer.status_code}: {answer.content[:200]!r}")
    token = answer.json()["url"].split("ticket=")[1]
    cookies = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    def admit():
        user, session_key = login_from_cookie_header(cookies)
        target = tickets.redeem_console_ticket(token=token, user=user, session_key=session_key, origin=origin,
                                               desktop_id=desktop_id)
        limits = console_sessions.console_limits(pool=target.pool)
        return console_sessions.open_console_session(user_id=target.user_id, desktop_id=target.desktop_id,
                                                     protocol=target.protocol, client_address="127.0.0.1",
                                                     limits=limits)

    session_id = counted("console", admit)
    console_sessions.close_console_session(session_id=session_id, code=1000, reason="query count done",
                                           bytes_to_client=0, bytes_to_desktop=0)
    counts["total"] = sum(counts.values())
    return counts


class CpuMeter:
    """CPU seconds of the portal, the worker (children and beat included), this bench, and the
    whole machine, between start() and stop()."""

    def __init__(self, world: w.World):
        self.world = world

    def _read(self):
        portal, worker = self.world.processes["portal"].pid, self.world.processes["worker"].pid
        return {"portal": w.cpu_seconds(portal), "worker": w.cpu_seconds(worker),
                "bench (clients, RFB)": w.cpu_seconds(os.getpid(), children=False),
                "postgres (all databases)": sum(w.cpu_seconds(p) for p in w.pids_named("postgres", parent=1)),
                "redis": sum(w.cpu_seconds(p) for p in w.pids_named("redis-server")),
                "slapd": w.cpu_seconds(self.world.slapd_pid) if self.world.slapd_pid else 0.0,
                "machine": w.machine_cpu_seconds()}

    def start(self):
        self.t0, self.first = time.perf_counter(), self._read()

    def stop(self) -> dict[str, float]:
        elapsed, last = time.perf_counter() - self.t0, self._read()
        busy = last["machine"][0] - self.first["machine"][0]
        total = last["machine"][1] - self.first["machine"][1]
        cores = total / elapsed if elapsed else 2
        shares = {name: (last[name] - self.first[name]) / elapsed * 100 for name in last if name != "machine"}
        shares["machine (all processes, other work included)"] = busy / elapsed * 100
        shares["machine capacity"] = cores * 100
        return shares


def run_storm(args, var_dir: Path, state: dict, loop) -> tuple[str, dict]:
    from django.utils import timezone

    world = build_world(args, var_dir, state, loop, spares=args.users + 1)
    world.within = args.within
    ref = []
    if args.reference_seconds > 0:
        progress(f"reference: bare hello app, {args.users / args.within:.1f} users/s for {args.reference_seconds:.0f} s")
        ref = loop.run_until_complete(reference(world, var_dir, args))
    progress(f"storm: {args.users} users within {args.within:.0f} s ({args.backend} backend)")
    meter = CpuMeter(world)
    since = timezone.now()
    load_before = os.getloadavg()
    meter.start()
    journeys, wall, browsers = loop.run_until_complete(storm(world, list(range(args.users))))
    cpu = meter.stop()
    open_consoles = sum(1 for b in browsers if b.console_ws is not None)
    loop.run_until_complete(together(b.close() for b in browsers))
    progress("double assignments, queries per launch")
    doubles = double_assignments(world, journeys, since)
    queries = queries_per_launch(world, args.users)
    return report_storm(args, world, journeys, wall, ref, cpu, doubles, queries, open_consoles, load_before)


def report_storm(args, world, journeys, wall, ref, cpu, doubles, queries, open_consoles, load_before):
    ok = [j for j in journeys if not j.error]
    errors = [j for j in journeys if j.error]
    per_phase = {p: [j.phases[p] for j in journeys if p in j.phases] for p in PHASES}
    totals = [j.finished - j.started for j in ok]
    stats = {p: {"p50": percentile(v, 50), "p95": percentile(v, 95), "p99": percentile(v, 99), "max": max(v, default=0)}
             for p, v in list(per_phase.items()) + [("journey", totals)]}
    worst = max(PHASES, key=lambda p: stats[p]["p99"] if per_phase[p] else -1)
    finished = max((j.finished for j in ok), default=0) - min((j.started for j in journeys), default=0)
    throughput = len(ok) / finished if finished > 0 else 0.0
    via = Counter(j.progress_via for j in ok)
    lines = [
        f"Logon storm: {args.users} users arriving evenly within {args.within:.0f} s, backend {args.backend} "
        f"({len(world.hosts)} host(s)), portal {world.base_url}: portal (uvicorn + console gateway, {world.portal_workers} "
        f"worker process(es)), "
        f"1 Celery worker (prefork {w.WORKER_CONCURRENCY}) with beat; PostgreSQL, Redis, slapd on loopback.",
        f"Machine: {os.cpu_count()} cores, load average before the storm "
        f"{' / '.join(f'{x:.2f}' for x in load_before)} (other work shares these cores).",
        "",
        f"{'phase':<12}{'n':>6}{'p50 s':>9}{'p95 s':>9}{'p99 s':>9}{'max s':>9}",
    ]
    for p in PHASES + ["journey"]:
        n = len(per_phase[p]) if p in per_phase else len(totals)
        s = stats[p]
        lines.append(f"{p:<12}{n:>6}{s['p50']:>9.3f}{s['p95']:>9.3f}{s['p99']:>9.3f}{s['max']:>9.3f}")
    if ref:
        lines.append(f"{'reference':<12}{len(ref):>6}{percentile(ref, 50):>9.4f}{percentile(ref, 95):>9.4f}"
                     f"{percentile(ref, 99):>9.4f}{max(ref):>9.4f}   <- one GET of a bare ASGI hello app, same "
                     f"uvicorn options, {HTTP_REQUESTS_PER_USER} per user at the storm's rate")
    lines += [
        "",
        f"users through: {len(ok)}/{len(journeys)} in {finished:.1f} s from first arrival to last ServerInit "
        f"({throughput:.1f} users/s); consoles open at the end of the storm: {open_consoles}; "
        f"progress via {dict(via)}",
        f"worst phase p99: {worst} {stats[worst]['p99']:.3f} s (target < {TARGETS['phase_p99_s']} s)",
        f"errors: {len(errors)}" + "".join(f"\n  {n} x {reason}" for reason, n in
                                            Counter(f"{j.failed_phase}: {j.error}" for j in errors).most_common(8)),
        f"double assignments: {doubles['total']} ({', '.join(f'{k} {v}' for k, v in doubles.items() if k != 'total')})",
        "database queries per launch (CaptureQueriesContext, one more user after the storm): "
        + ", ".join(f"{k} {v}" for k, v in queries.items()),
        "CPU during the storm, % of one core: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()),
    ]
    summary = {
        "users": args.users, "within_s": args.within, "backend": args.backend,
        "phase_p99_s": round(stats[worst]["p99"], 4), "worst_phase": worst,
        "errors": len(errors), "double_assignments": doubles["total"],
        "phases": {p: {k: round(v, 4) for k, v in stats[p].items()} for p in PHASES + ["journey"]},
        "throughput_users_per_s": round(throughput, 2), "completed": len(ok), "storm_s": round(finished, 2),
        "reference_hello_request_s": {"p50": round(percentile(ref, 50), 5), "p99": round(percentile(ref, 99), 5)}
        if ref else None,
        "queries_per_launch": queries, "cpu_percent_of_core": {k: round(v) for k, v in cpu.items()},
        "targets": TARGETS,
    }
    return "\n".join(lines), summary


# -- the soak ------------------------------------------------------------------------------------


def world_counts(world: w.World) -> dict:
    from django.contrib.sessions.models import Session
    from django.db.models import Count
    from django.utils import timezone

    from broker.models import ConsoleSession, ConsoleTicket, Desktop

    counts = {}
    if world.backend == "tcg":
        import libvirt

        from django.conf import settings

        conn = libvirt.open(world.hosts[0].libvirt_uri)
        try:
            counts["domains"] = sum(1 for d in conn.listAllDomains(0) if d.name().startswith(w.NAME_PREFIX))
            pool = conn.storagePoolLookupByName(settings.VDI_STORAGE_POOL)
            counts["volumes"] = sum(1 for v in pool.listAllVolumes(0) if v.name().startswith(w.NAME_PREFIX))
        finally:
            conn.close()
    states = dict(Desktop.objects.filter(pool=world.pool).values_list("state").annotate(n=Count("id")))
    counts.update({f"desktops {state}": n for state, n in sorted(states.items())})
    counts["desktops assigned (live)"] = Desktop.objects.filter(pool=world.pool, user__isnull=False).exclude(
        state__in=["deleted", "deleting"]).count()
    counts["console sessions open"] = ConsoleSession.objects.filter(closed_at__isnull=True).count()
    counts["console tickets unexpired"] = ConsoleTicket.objects.filter(expires_at__gt=timezone.now()).count()
    counts["login sessions"] = Session.objects.filter(expire_date__gt=timezone.now()).count()
    counts["connections at the portal"] = w.open_connections(world.port)
    return counts


def memory(world: w.World) -> dict[str, float]:
    return {name: w.rss_mib(process.pid) for name, process in world.processes.items()}


async def soak_user(world: w.World, index: int, deadline: float, cycles: Counter, errors: list, phases: dict):
    rng = random.Random(index)
    while True:
        browser = Browser("127.0.0.1", world.port, w.username_of(index), w.password_of(index))
        journey = Journey(user=browser.username)
        try:
            await browser.journey(journey)
            if journey.error:
                errors.append(f"{journey.failed_phase}: {journey.error}")
                if "sessionid" in browser.http.cookies:  # logged in, then refused: log out as a person would
                    await browser.log_out()
            else:
                for p, t in journey.phases.items():
                    phases[p].append(t)
                await browser.type_keys("echo storm soak\n")
                await asyncio.sleep(rng.uniform(1, 3))  # working
                await browser.log_off()
                cycles[index] += 1
        except Exception as exc:  # noqa: BLE001 - counted with its reason
            errors.append(f"log off: {exc!r}"[:200])
        finally:
            await browser.close()
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(rng.uniform(1, 3))  # away, then back


def settle(world: w.World, spares: int, timeout_s: float = 120) -> float:
    """Until the pool is back to its spares with nothing in flight (wiped desktops deleted)."""
    from broker.models import Desktop

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        desktops = Desktop.objects.filter(pool=world.pool).exclude(state__in=["deleted", "failed"])
        if (desktops.filter(state="running", user__isnull=True).count() == spares
                and desktops.count() == spares):
            return time.monotonic() - t0
        time.sleep(1)
    return time.monotonic() - t0


def run_soak(args, var_dir: Path, state: dict, loop) -> tuple[str, dict]:
    users = list(range(args.soak_users))
    spares = args.soak_users
    world = build_world(args, var_dir, state, loop, spares=spares, max_desktops=2 * spares + 1)
    world.within = 1.0
    progress(f"soak warm-up: one cycle per user ({args.soak_users} users)")
    cycles, errors, phases = Counter(), [], defaultdict(list)
    loop.run_until_complete(together(soak_user(world, i, 0, cycles, errors, phases) for i in users))
    settle(world, spares)
    time.sleep(w_ticket_ttl() + 1)  # the warm-up's tickets expire, as the end's will
    before, rss_before = world_counts(world), memory(world)
    progress(f"soak: {args.soak:g} min; before: {before}; RSS MiB {rss_before}")
    cycles, errors, phases = Counter(), [], defaultdict(list)
    from django.utils import timezone

    since = timezone.now()
    deadline = time.monotonic() + args.soak * 60
    t0 = time.perf_counter()
    loop.run_until_complete(together(soak_user(world, i, deadline, cycles, errors, phases) for i in users))
    wall = time.perf_counter() - t0
    settled_s = settle(world, spares)
    time.sleep(w_ticket_ttl() + 1)
    after, rss_after = world_counts(world), memory(world)
    doubles = double_assignments(world, [], since)["total"]
    return report_soak(args, world, before, after, rss_before, rss_after, cycles, errors, phases, wall, settled_s,
                       doubles)


def w_ticket_ttl() -> float:
    from django.conf import settings

    return settings.VDI_CONSOLE_TICKET_TTL_SECONDS


def report_soak(args, world, before, after, rss_before, rss_after, cycles, errors, phases, wall, settled_s,
                doubles):
    growth = {k: (rss_after[k] - rss_before[k]) / rss_before[k] * 100 for k in rss_before}
    leaks = {}
    live_after = sum(v for k, v in after.items() if k.startswith("desktops ") and k.split()[1] in
                     ("running", "stopped", "starting", "cloning", "queued"))
    if world.backend == "tcg":
        leaks["domains beyond live desktops"] = max(0, after["domains"] - live_after)
        leaks["volumes beyond live desktops"] = max(0, after["volumes"] - live_after)
    leaks["desktops still assigned"] = after["desktops assigned (live)"]
    for key in ("console sessions open", "console tickets unexpired", "login sessions", "connections at the portal"):
        leaks[key] = after[key]
    keys = list(dict.fromkeys(list(before) + list(after)))
    lines = [
        f"Soak: {args.soak_users} users for {args.soak:g} min ({wall:.0f} s), backend {args.backend}: launch, "
        f"type, log off, come back; {sum(cycles.values())} cycles ({dict(sorted(cycles.items()))}), "
        f"{len(errors)} errors; pool settled {settled_s:.0f} s after the last log off.",
        "", f"{'count':<30}{'before':>10}{'after':>10}",
    ]
    lines += [f"{k:<30}{before.get(k, 0):>10}{after.get(k, 0):>10}" for k in keys]
    lines += ["", f"{'RSS MiB':<30}{'before':>10}{'after':>10}{'growth %':>10}"]
    lines += [f"{k + (' (gateway in it)' if k == 'portal' else ' (+children, beat)'):<30}{rss_before[k]:>10.1f}"
              f"{rss_after[k]:>10.1f}{growth[k]:>10.1f}" for k in rss_before]
    lines.append(f"double assignments over the soak (rows, events): {doubles}")
    lines.append("left that should not be: " + ", ".join(f"{k} {v}" for k, v in leaks.items()))
    lines.append("phases over the soak, p99 s: " + ", ".join(f"{p} {percentile(v, 99):.3f}" for p, v in phases.items()))
    for reason, n in Counter(errors).most_common(5):
        lines.append(f"  error {n} x {reason}")
    summary = {
        "users": args.soak_users, "soak_minutes": args.soak, "backend": args.backend, "cycles": sum(cycles.values()),
        "errors": len(errors), "double_assignments": doubles,
        "phase_p99_s": round(max((percentile(v, 99) for v in phases.values()), default=0), 4),
        "phases_p99_s": {p: round(percentile(v, 99), 4) for p, v in phases.items()},
        "before": before, "after": after, "leaks": leaks,
        "rss_mib_before": {k: round(v, 1) for k, v in rss_before.items()},
        "rss_mib_after": {k: round(v, 1) for k, v in rss_after.items()},
        "rss_growth_percent": {k: round(v, 1) for k, v in growth.items()},
    }
    return "\n".join(lines), summary


# -- setup and teardown --------------------------------------------------------------------------


def build_world(args, var_dir: Path, state: dict, loop, *, spares: int, max_desktops: int | None = None) -> w.World:
    accounts = max(args.users, args.soak_users if args.soak else 0) + 1
    progress(f"slapd with {accounts} accounts")
    state["slapd"] = w.start_directory(var_dir / "slapd", accounts)
    w.configure_environment(args, var_dir, state["slapd"].uri)
    import django

    progress(f"database {w.DATABASE}, Redis {w.REDIS_URL}")
    w.create_database()
    state["database"] = True
    w.flush_redis()
    state["redis"] = True
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import Group

    Group.objects.get_or_create(name=w.GROUP)
    if args.backend == "cheap":
        rfb = w.CheapRfbServers(spares)
        loop.run_until_complete(rfb.start())
        state["rfb"] = rfb
        progress(f"{spares} running spares on test-driver hosts, one RFB port each")
        world = w.build_cheap_world(args, var_dir, rfb)
    else:
        import libvirt

        from bench.launch import remove_bench_leftovers
        from django.conf import settings

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        conn = state["conn"] = libvirt.open("qemu:///system")
        stale = remove_bench_leftovers(conn, settings.VDI_STORAGE_POOL, settings.VDI_GUEST_LOG_DIR, prefix=w.NAME_PREFIX)
        if stale:
            progress(f"removed leftovers of an earlier run: {stale}")
        world = w.build_tcg_world(args, spares=spares, max_desktops=max_desktops or spares)
    t0 = time.perf_counter()
    call_command("ldap_sync", stdout=open(os.devnull, "w"))
    progress(f"directory sync made the accounts in {time.perf_counter() - t0:.1f} s")
    state["world"] = world
    world.portal_workers = args.portal_workers
    world.slapd_pid = state["slapd"].process.pid
    w.start_processes(world, var_dir)
    if args.backend == "tcg":
        progress(f"waiting for {spares} TCG spares (the worker clones and boots them)")
        took = w.wait_for_spares(world, spares, timeout_s=120 + 15 * spares)
        progress(f"spares running after {took:.0f} s")
        time.sleep(5)  # the last ones past their first seconds of boot
    return world


def clean_up(state: dict, var_dir: Path) -> list[str]:
    left = []

    def attempt(what, step):
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next step
            progress(f"cleanup: {what} failed: {exc!r}")
            left.append(what)

    if "world" in state:
        attempt("stopping the portal and the worker", lambda: w.stop_processes(state["world"]))
    if "conn" in state:
        from bench.launch import leftovers, remove_bench_leftovers
        from django.conf import settings

        conn = state["conn"]
        args = (conn, settings.VDI_STORAGE_POOL, settings.VDI_GUEST_LOG_DIR)
        attempt("removing domains and volumes", lambda: remove_bench_leftovers(*args, prefix=w.NAME_PREFIX))
        still = attempt("listing leftovers", lambda: leftovers(*args, prefix=w.NAME_PREFIX)) or []
        if still:
            progress(f"cleanup: still there: {still}")
            left += still
    if "slapd" in state:
        attempt("stopping slapd", state["slapd"].stop)
    if state.get("database"):
        attempt("dropping the database", w.drop_database)
    if state.get("redis"):
        attempt("flushing Redis", w.flush_redis)
    shutil.rmtree(var_dir, ignore_errors=True)
    return left


def main() -> int:
    from bench import launch

    args = parse_args()
    loop = asyncio.new_event_loop()

    def run(args, var_dir, state):
        return (run_soak if args.soak else run_storm)(args, var_dir, state, loop)

    def report_failure(var_dir):
        for name in ("portal", "worker"):
            progress(f"{name} log, last lines:\n{w.tail(var_dir / f'{name}.log', 15)}")

    def clean_up_and_close(state, var_dir):
        left = clean_up(state, var_dir)
        if "rfb" in state:
            loop.run_until_complete(state["rfb"].stop())
        loop.close()
        return left

    # slapd reads its files as root, the qemu user reads nothing here
    return launch.run_bench(run, args=args, temp_prefix="vdistorm-", clean_up=clean_up_and_close,
                            report_failure=report_failure, var_dir_mode=0o755)


if __name__ == "__main__":
    sys.exit(main())
