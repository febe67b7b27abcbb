"""Console proxy benchmark: the project's gateway against websockify 0.13 and raw TCP.

    .venv/bin/python bench/console_proxy.py [--rounds 5] [--quick] [--database-url URL]

One invocation starts a fake VM (bench/console_proxy_vm.py: RFB 3.8 with VNC authentication,
then echo or flood on request), the portal under uvicorn exactly as `make run` starts it, and
a plain websockify 0.13 relaying to the same VM port. The three peers, interleaved in
rotating order for --rounds rounds (medians reported):

  gateway     ws://…/ws/console/<desktop>/?ticket=…: a real login session cookie, the portal's
              Origin, a fresh one-time ticket per connection (issue_console_ticket, with the
              VM's password sealed in when the service takes one), one user and desktop per
              concurrent console
  websockify  the same websocket client with the same headers, no ticket
  raw TCP     the client straight on the VM port: the floor

Every session opens as noVNC would (handshake_as_browser in bench/console_proxy_rfb.py:
security None if offered, else VNC authentication with the VM's password), so whatever
authentication the gateway does itself is inside every measurement; the table's third line
says what each peer offered the browser. Measured: single-stream throughput and the relay's
CPU per GB; round-trip latency of 100-byte messages; aggregate throughput of 50 concurrent
sessions with each session's longest stall; the relay's memory growth while the browser
reads slowly; 1,000 idle consoles held by one gateway process (memory per connection, and
whether a broker message, as sent on logout, still closes every one of them); and the
gateway's health afterwards (exceptions and warnings in its log, console session rows left
open).

The browsers' websocket client is console_proxy_lean.py by default: it parses frames in place
and only counts a flood's bytes, so, like a browser's network stack, it costs little per read.
`--client websockets` uses the websockets library instead: that client's own process is then
40-90% busy in the 50-session run and pays for every wakeup, so the aggregate measures the
client as much as the relays (and favours a relay that delivers late, in bigger reads).
`--gateway-workers N` runs the gateway with uvicorn --workers N (make run: 1).

Everything runs in isolation: a temporary VDI_VAR_DIR and SQLite database (or an empty
database given with --database-url), channel-layer prefix vdibench, Celery on Redis
database 14 (nothing is enqueued). All processes and files are removed at the end, also on
Ctrl+C. The table goes to stdout, its last line is one JSON object; progress to stderr.
The machine's load average is printed with the table: the ratios hold only when nothing
else competes for the CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import console_proxy_procs as procs  # noqa: E402
from console_proxy_client import (  # noqa: E402
    GatewayPeer,
    Meter,
    RawPeer,
    WebsockifyPeer,
    concurrent_streams,
    idle_connections,
    round_trips,
    single_stream,
    slow_reader,
)

MB = 10**6
# Targets of the issue, as gateway/websockify ratios in the same run.
TARGETS = {
    "throughput_vs_websockify": (">=", 1.0),
    "cpu_per_gb_vs_websockify": ("<=", 1.0),
    "latency_p50_vs_websockify": ("<=", 1.5),
    "latency_p99_vs_websockify": ("<=", 1.5),
    "aggregate50_vs_websockify": (">=", 1.3),
    "max_stall_s": ("<=", 1.0),
    "slow_reader_growth_mb": ("<", 10.0),
}


def progress(message: str) -> None:
    print(f"[console-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the interleaved metrics (default 5)")
    parser.add_argument("--stream-mb", type=int, default=512, help="bytes of one single-stream run, MB (512)")
    parser.add_argument("--round-trips", type=int, default=2000, help="100-byte round trips per run (2000)")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent sessions (50)")
    parser.add_argument("--session-mb", type=int, default=32, help="bytes per concurrent session, MB (32)")
    parser.add_argument("--slow-seconds", type=float, default=10, help="slow reader duration (10)")
    parser.add_argument("--idle", type=int, default=1000, help="idle consoles held by the gateway (1000)")
    parser.add_argument("--hold-seconds", type=float, default=10, help="how long they are held (10)")
    parser.add_argument("--vm-security", choices=["vnc", "none"], default="vnc",
                        help="what the fake VM asks for, like QEMU with or without a VNC password (vnc)")
    parser.add_argument("--vm-password", default="benchpw1",
                        help="the VM's VNC password (at most 8 characters count), sealed into every ticket")
    parser.add_argument("--database-url", help="an EMPTY database instead of a temporary SQLite file")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the processes' logs here at the end")
    parser.add_argument("--client", choices=["lean", "websockets"], default="lean",
                        help="the browsers' websocket client: console_proxy_lean.py (default; little "
                             "cost per read, like a browser's network stack) or the websockets library")
    parser.add_argument("--gateway-workers", type=int, default=1,
                        help="uvicorn --workers for the gateway (default 1, as make run starts it)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.stream_mb, args.round_trips = 1, 32, 300
        args.sessions, args.session_mb, args.slow_seconds = 10, 4, 2
        args.idle, args.hold_seconds = 100, 2
    if min(args.rounds, args.stream_mb, args.round_trips, args.sessions, args.session_mb, args.idle) < 1:
        parser.error("counts and sizes must be at least 1")
    if args.vm_security == "vnc" and not args.vm_password:
        parser.error("--vm-security vnc needs a --vm-password")
    return args


# -- running the metrics ------------------------------------------------------------------------


class Bench:
    def __init__(self, args, peers, meters):
        self.args, self.peers, self.meters = args, peers, meters
        self.results: dict[str, dict[str, list]] = {p.name: {} for p in peers}

    def record(self, peer, metric: str, value) -> None:
        self.results[peer.name].setdefault(metric, []).append(value)

    def runs(self) -> dict:
        """Every round's figure, so that the spread behind each median can be seen."""
        picks = {"throughput": "mb_s", "latency": "p50_ms", "aggregate": "mb_s"}
        return {
            name: {metric: [round(getattr(r, picks[metric]), 3) for r in metrics[metric]]
                   for metric in picks if metric in metrics}
            for name, metrics in self.results.items()
        }

    async def warm_up(self) -> None:
        """Untimed: imports, database connections, first-use allocations of every relay."""
        for peer in self.peers:
            await single_stream(peer, self.meters[peer.name], 16 * MB)
            await round_trips(peer, 200, 100)

    async def interleaved_rounds(self) -> None:
        args = self.args
        for number in range(args.rounds):
            order = self.peers[number % len(self.peers):] + self.peers[: number % len(self.peers)]
            progress(f"round {number + 1}/{args.rounds}: order {', '.join(p.name for p in order)}")
            for peer in order:
                result = await single_stream(peer, self.meters[peer.name], args.stream_mb * MB)
                self.record(peer, "throughput", result)
                progress(f"  {peer.name}: single stream {result.mb_s:.0f} MB/s, relay CPU "
                         f"{fmt(result.cpu_s_per_gb, 2)} s/GB, client busy {result.client_busy:.0%}")
            for peer in order:
                result = await round_trips(peer, args.round_trips, 100)
                self.record(peer, "latency", result)
                progress(f"  {peer.name}: round trip p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms")
            for peer in order:
                result = await concurrent_streams(peer, self.meters[peer.name], args.sessions, args.session_mb * MB)
                self.record(peer, "aggregate", result)
                progress(f"  {peer.name}: {args.sessions} sessions {result.mb_s:.0f} MB/s, "
                         f"longest stall {result.max_stall_s:.3f} s, client busy {result.client_busy:.0%}")

    async def slow_readers(self) -> None:
        for peer in self.peers:
            if peer.service is None:
                continue
            result = await slow_reader(peer, self.meters[peer.name], seconds=self.args.slow_seconds,
                                       read_bytes=64 * 1024, every_s=0.1)
            self.record(peer, "slow_reader", result)
            progress(f"  {peer.name}: slow reader, relay grew {result.growth_mb:.1f} MB "
                     f"(browser read {result.read_mb:.1f} MiB)")

    async def idle_consoles(self, gateway) -> None:
        result = await idle_connections(gateway, self.meters[gateway.name], count=self.args.idle,
                                        hold_s=self.args.hold_seconds, concurrency=50)
        self.record(gateway, "idle", result)
        progress(f"  gateway: {result.held}/{result.opened} idle consoles held, "
                 f"{result.mb_per_conn * 1024:.0f} KiB each, opened in {result.open_s:.1f} s; "
                 f"{result.closed_by_broker} closed by broker messages (sent in {fmt(result.broker_send_s, 1)} s, "
                 f"{result.broker_dropped} dropped by the channel layer) after {fmt(result.broker_close_s, 1)} s")
        if result.lost:
            progress(f"  gateway: idle consoles closed while held: {result.lost}")


# -- reporting ----------------------------------------------------------------------------------


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(bench: Bench) -> dict:
    """Per peer: medians over the rounds (the longest stall: the worst of all rounds)."""
    out = {}
    for name, metrics in bench.results.items():
        figures = {}
        if "throughput" in metrics:
            runs = metrics["throughput"]
            figures["throughput_mb_s"] = median(r.mb_s for r in runs)
            figures["cpu_s_per_gb"] = median(r.cpu_s_per_gb for r in runs)
        if "latency" in metrics:
            runs = metrics["latency"]
            figures["latency_p50_ms"] = median(r.p50_ms for r in runs)
            figures["latency_p99_ms"] = median(r.p99_ms for r in runs)
            figures["session_open_ms"] = median([r.setup_s * 1e3 for r in runs] +
                                                [r.setup_s * 1e3 for r in metrics.get("throughput", [])])
        if "aggregate" in metrics:
            runs = metrics["aggregate"]
            figures["aggregate_mb_s"] = median(r.mb_s for r in runs)
            figures["aggregate_cpu_s_per_gb"] = median(r.cpu_s_per_gb for r in runs)
            figures["max_stall_s"] = max(r.max_stall_s for r in runs)
            figures["aggregate_client_busy"] = median(r.client_busy for r in runs)
        if "slow_reader" in metrics:
            figures["slow_reader_growth_mb"] = metrics["slow_reader"][0].growth_mb * 2**20 / MB
        if "idle" in metrics:
            idle = metrics["idle"][0]
            figures.update(idle_opened=idle.opened, idle_held=idle.held, idle_open_s=idle.open_s,
                           idle_mb_per_conn=idle.mb_per_conn * 2**20 / MB, idle_lost=idle.lost,
                           idle_closed_by_broker=idle.closed_by_broker, idle_broker_send_s=idle.broker_send_s,
                           idle_broker_dropped=idle.broker_dropped,
                           idle_broker_close_s=idle.broker_close_s,
                           idle_setup_p50_ms=idle.setup_p50_s * 1e3, idle_setup_p99_ms=idle.setup_p99_s * 1e3)
        out[name] = {key: (round(value, 4) if isinstance(value, float) else value) for key, value in figures.items()}
    return out


def ratio(a, b):
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def ratios(summary: dict) -> dict:
    g, w = summary.get("gateway", {}), summary.get("websockify", {})
    return {
        "throughput_vs_websockify": ratio(g.get("throughput_mb_s"), w.get("throughput_mb_s")),
        "cpu_per_gb_vs_websockify": ratio(g.get("cpu_s_per_gb"), w.get("cpu_s_per_gb")),
        "latency_p50_vs_websockify": ratio(g.get("latency_p50_ms"), w.get("latency_p50_ms")),
        "latency_p99_vs_websockify": ratio(g.get("latency_p99_ms"), w.get("latency_p99_ms")),
        "aggregate50_vs_websockify": ratio(g.get("aggregate_mb_s"), w.get("aggregate_mb_s")),
        # Against the same client and fake VM with no relay between them (not a strict ceiling:
        # the client's cost per GB differs between a websocket and a plain TCP stream).
        "aggregate50_vs_raw_tcp": ratio(g.get("aggregate_mb_s"), summary.get("raw TCP", {}).get("aggregate_mb_s")),
        "max_stall_s": g.get("max_stall_s"),
        "slow_reader_growth_mb": g.get("slow_reader_growth_mb"),
        "idle_1000_mb_per_conn": g.get("idle_mb_per_conn"),
        # Share of the held idle consoles that a broker message (as on logout) closed in time.
        "idle_closed_by_broker_share": ratio(g.get("idle_closed_by_broker"), g.get("idle_held")),
    }


def targets_met(figures: dict) -> dict:
    met = {}
    for key, (op, limit) in TARGETS.items():
        value = figures.get(key)
        met[key] = None if value is None else {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]
    return met


def fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def table(args, summary: dict, figures: dict, met: dict, context: list[str]) -> str:
    g, w, r = (summary.get(n, {}) for n in ("gateway", "websockify", "raw TCP"))
    n = args.sessions

    def row(label, key, digits=1, ratio_key=None, target=""):
        ratio_value = figures.get(ratio_key) if ratio_key else ratio(g.get(key), w.get(key))
        verdict = ""
        if ratio_key in met and met[ratio_key] is not None:
            verdict = "yes" if met[ratio_key] else "NO"
        return [label, fmt(g.get(key), digits), fmt(w.get(key), digits), fmt(r.get(key), digits),
                fmt(ratio_value, 2), target, verdict]

    def kib(value):
        return None if value is None else value * MB / 1024

    def pct(value):
        return None if value is None else f"{value * 100:.0f}%"

    idle_held = f"{g['idle_held']}/{g['idle_opened']}" if "idle_held" in g else None
    broker_closed = (f"{g['idle_closed_by_broker']}/{g['idle_held']}"
                     if g.get("idle_closed_by_broker") is not None else None)
    stall_verdict = "" if met.get("max_stall_s") is None else ("yes" if met["max_stall_s"] else "NO")
    slow_verdict = "" if met.get("slow_reader_growth_mb") is None else ("yes" if met["slow_reader_growth_mb"] else "NO")
    rows = [
        ["metric", "gateway", "websockify", "raw TCP", "gw/wsfy", "target", "met"],
        row(f"single stream ({args.stream_mb} MB), MB/s", "throughput_mb_s", 0, "throughput_vs_websockify", ">= 1"),
        row("  relay CPU, s per GB", "cpu_s_per_gb", 2, "cpu_per_gb_vs_websockify", "<= 1"),
        row("round trip 100 B, p50 ms", "latency_p50_ms", 3, "latency_p50_vs_websockify", "<= 1.5"),
        row("round trip 100 B, p99 ms", "latency_p99_ms", 3, "latency_p99_vs_websockify", "<= 1.5"),
        row(f"{n} sessions x {args.session_mb} MB, aggregate MB/s", "aggregate_mb_s", 0,
            "aggregate50_vs_websockify", ">= 1.3"),
        ["  longest stall of one session, s", fmt(g.get("max_stall_s"), 3), fmt(w.get("max_stall_s"), 3),
         fmt(r.get("max_stall_s"), 3), "", "gw <= 1 s", stall_verdict],
        row("  relay CPU, s per GB", "aggregate_cpu_s_per_gb", 2),
        ["  bench client busy (near 100%: the client limits)", fmt(pct(g.get("aggregate_client_busy"))),
         fmt(pct(w.get("aggregate_client_busy"))), fmt(pct(r.get("aggregate_client_busy"))), "", "", ""],
        ["  gateway / raw TCP (the same client and VM, no relay)", "", "", "",
         fmt(figures.get("aggregate50_vs_raw_tcp"), 2), "", ""],
        row("session open (connect to ServerInit), p50 ms", "session_open_ms", 2),
        [f"slow reader (64 KB / 100 ms, {args.slow_seconds:g} s), relay RSS growth MB",
         fmt(g.get("slow_reader_growth_mb"), 1), fmt(w.get("slow_reader_growth_mb"), 1), "-",
         fmt(ratio(g.get("slow_reader_growth_mb"), w.get("slow_reader_growth_mb")), 2), "gw < 10 MB", slow_verdict],
        [f"{args.idle} idle consoles, gateway RSS per connection KiB", fmt(kib(g.get("idle_mb_per_conn")), 0),
         "-", "-", "", "reported", ""],
        ["  held / opened", fmt(idle_held), "-", "-", "", "all", ""],
        ["  closed by a broker message (as on logout) / held", fmt(broker_closed), "-", "-", "", "all", ""],
        ["  ... messages dropped by the channel layer (queue full)", fmt(g.get("idle_broker_dropped"), 0),
         "-", "-", "", "0", ""],
        ["  ... messages sent in / last console closed after, s",
         f"{fmt(g.get('idle_broker_send_s'), 1)} / {fmt(g.get('idle_broker_close_s'), 1)}", "-", "-", "", "", ""],
        ["  time to open them all, s", fmt(g.get("idle_open_s"), 1), "-", "-", "", "", ""],
        ["  session open under that load p50 / p99, ms",
         f"{fmt(g.get('idle_setup_p50_ms'), 0)} / {fmt(g.get('idle_setup_p99_ms'), 0)}", "-", "-", "", "", ""],
        ["gateway: unhandled exceptions in its log", fmt(g.get("errors_logged"), 0), "-", "-", "", "0", ""],
        ["gateway: warnings in its log", fmt(g.get("warnings_logged"), 0), "-", "-", "", "", ""],
        ["gateway: console session rows never closed", fmt(g.get("sessions_left_open"), 0), "-", "-", "", "0", ""],
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = context + [""]
    notes = []
    if g.get("error_kinds"):
        notes.append("gateway exceptions: " + ", ".join(f"{k} x{v}" for k, v in g["error_kinds"].items()))
    if g.get("warning_kinds"):
        top = list(g["warning_kinds"].items())[:3]
        notes.append("gateway warnings: " + "; ".join(f"{k} x{v}" for k, v in top))
    if g.get("idle_lost"):
        notes.append("idle consoles lost while held: " + ", ".join(f"{k} x{v}" for k, v in g["idle_lost"].items()))
    for number, cells in enumerate(rows):
        lines.append("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                               for i, c in enumerate(cells)).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines + notes)


# -- main ---------------------------------------------------------------------------------------


def run(args, var_dir: Path, state: dict) -> tuple[str, dict]:
    load_at_start = os.getloadavg()  # before our own processes add to it
    import console_proxy_client

    console_proxy_client.WEBSOCKET_CLIENT = args.client
    nofile = procs.raise_open_files_limit()
    from console_proxy_fixture import configure_environment, create_slots, issue_tickets, migrate, \
        quiet_bench_logging, session_cookie_header

    env = configure_environment(var_dir=var_dir, database_url=args.database_url)
    log_dir = var_dir / "logs"
    log_dir.mkdir()
    state["log_dir"] = log_dir
    import django

    django.setup()
    quiet_bench_logging()

    # Who answers the VM's VNC authentication with it: the gateway (from the ticket, once it
    # authenticates itself), or the browser through a plain relay.
    password = args.vm_password if args.vm_security == "vnc" else None
    progress(f"starting the fake VM (security {args.vm_security})")
    vm, vm_port = procs.start_vm(env=env, log_dir=log_dir, security=args.vm_security, password=password)
    state["services"].append(vm)

    slot_count = max(args.sessions, args.idle, 2)
    progress(f"migrating a fresh database; {slot_count} users, login sessions and running desktops")
    migrate(given_database=bool(args.database_url))
    state["rows_in_given_database"] = bool(args.database_url)
    slots = create_slots(count=slot_count, vm_port=vm_port, node_file=var_dir / "bench-node.xml")

    portal_port, websockify_port = procs.free_port(), procs.free_port()
    progress(f"starting uvicorn as `make run` does, on port {portal_port}")
    uvicorn = procs.start_uvicorn(env=env, log_dir=log_dir, port=portal_port, workers=args.gateway_workers)
    state["services"].append(uvicorn)
    progress(f"starting websockify {procs.websockify_version()} on port {websockify_port}")
    websockify = procs.start_websockify(env=env, log_dir=log_dir, port=websockify_port, vm_port=vm_port)
    state["services"].append(websockify)

    django_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="django")
    state["django_thread"] = django_thread

    async def run_in_django(fn, *a, **kw):
        return await asyncio.get_running_loop().run_in_executor(django_thread, functools.partial(fn, *a, **kw))

    gateway = GatewayPeer(service=uvicorn, port=portal_port, slots=slots, issue_tickets=issue_tickets,
                          run_in_django=run_in_django, vm_password=password)
    peers = [
        gateway,
        WebsockifyPeer(service=websockify, port=websockify_port, origin=gateway.origin,
                       cookie_header=session_cookie_header(slots[0].cookie), vm_password=password),
        RawPeer(vm_port=vm_port, vm_password=password),
    ]
    meters = {p.name: Meter(p.service, procs.cpu_seconds, procs.rss_bytes) for p in peers}
    bench = Bench(args, peers, meters)

    async def measure():
        progress("warm-up, untimed")
        await bench.warm_up()
        await bench.interleaved_rounds()
        progress("slow readers")
        await bench.slow_readers()
        progress(f"{args.idle} idle consoles on the gateway, held {args.hold_seconds:g} s")
        await bench.idle_consoles(gateway)
        return await run_in_django(console_sessions_left_open)

    started = time.perf_counter()
    left_open = asyncio.run(measure())
    for service in state["services"]:
        service.check_alive()
    errors, warnings = gateway_problems(uvicorn.log_path)

    summary = summarise(bench)
    summary["gateway"].update(errors_logged=sum(errors.values()), error_kinds=errors,
                              warnings_logged=sum(warnings.values()), warning_kinds=warnings,
                              sessions_left_open=left_open)
    figures = ratios(summary)
    met = targets_met(figures)

    def loads(values):
        return " / ".join(f"{x:.2f}" for x in values)

    from config.serve import CONSOLE_OPTIONS

    context = [
        f"console proxy bench: {os.cpu_count()} CPUs, load at start {loads(load_at_start)} and at the end "
        f"{loads(os.getloadavg())} (1/5/15 min), {args.rounds} rounds interleaved (medians), "
        f"{time.perf_counter() - started:.0f} s of measuring, open files {nofile}",
        f"gateway: python -m config.serve (uvicorn {' '.join(CONSOLE_OPTIONS)}, workers "
        f"{args.gateway_workers}) (pid "
        f"{uvicorn.pid}); websockify {procs.websockify_version()} (pid {websockify.pid}); fake VM security "
        f"{args.vm_security}",
        "security the browser negotiated: " + ", ".join(f"{p.name} {p.security_names()}" for p in peers)
        + f"; websocket client: {args.client}",
    ]
    result = {
        **figures,
        "targets_met": met,
        "peers": summary,
        "browser_security": {p.name: p.security_names() for p in peers},
        "runs": bench.runs(),
        "load_at_start": [round(x, 2) for x in load_at_start],
        "rounds": args.rounds,
        "stream_mb": args.stream_mb,
        "sessions": args.sessions,
        "session_mb": args.session_mb,
        "idle": args.idle,
    }
    return table(args, summary, figures, met, context), result


def console_sessions_left_open(wait_s: float = 10.0) -> int:
    """Console session rows the gateway never closed although every console is gone."""
    from broker.models import ConsoleSession

    deadline = time.monotonic() + wait_s
    while True:
        count = ConsoleSession.objects.filter(closed_at__isnull=True).count()
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def gateway_problems(log_path: Path) -> tuple[dict, dict]:
    """Unhandled exceptions in the gateway's log (by the exception that ended the traceback),
    and its warnings (by message, numbers and hashes blanked)."""
    errors: dict[str, int] = {}
    warnings: dict[str, int] = {}
    in_traceback = False
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("ERROR:") and "Exception in ASGI application" in line:
            in_traceback = True
        elif in_traceback and line and not line.startswith((" ", "Traceback", "The above", "During handling")):
            kind = line.split(":", 1)[0]
            errors[kind] = errors.get(kind, 0) + 1
            in_traceback = False
        elif " WARNING " in line:
            message = re.sub(r"\b[0-9a-f]{6,}\b|\d+", "#", line.split(" WARNING ", 1)[1])
            warnings[message] = warnings.get(message, 0) + 1
    return errors, dict(sorted(warnings.items(), key=lambda item: -item[1]))


def clean_up(state: dict, var_dir: Path) -> None:
    def attempt(what, step):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next step
            progress(f"cleanup: {what} failed: {exc!r}")

    for service in reversed(state.get("services", [])):
        attempt(f"stopping {service.name}", service.stop)
    if state.get("keep_logs") and "log_dir" in state:
        attempt("copying the logs", lambda: shutil.copytree(state["log_dir"], state["keep_logs"], dirs_exist_ok=True))
    if "django_thread" in state:
        from django.db import connections

        attempt("closing the database", lambda: state["django_thread"].submit(connections.close_all).result(10))
        state["django_thread"].shutdown(wait=False)
    if state.get("rows_in_given_database"):
        from console_proxy_fixture import delete_rows

        attempt("deleting the bench's rows", delete_rows)
    attempt("removing channel-layer keys", remove_channel_layer_keys)
    shutil.rmtree(var_dir, ignore_errors=True)


def remove_channel_layer_keys() -> None:
    """Groups of consoles that did not say goodbye (a killed run) would linger in Redis a day."""
    from django.conf import settings

    if "django" not in sys.modules or not settings.configured:
        return
    import redis

    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    host = config["hosts"][0]
    client = redis.Redis.from_url(host["address"] if isinstance(host, dict) else host)
    keys = list(client.scan_iter(match=f"{config['prefix']}:*", count=1000))
    if keys:
        client.delete(*keys)


def main() -> int:
    args = parse_args()

    def terminate(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    var_dir = Path(tempfile.mkdtemp(prefix="vdibench-console-"))
    state: dict = {"services": [], "keep_logs": args.keep_logs}
    result = None
    try:
        result = run(args, var_dir, state)
    except KeyboardInterrupt:
        progress("interrupted")
    except Exception as exc:  # noqa: BLE001 - whatever broke, say what and clean up
        progress(f"aborted: {exc!r}")
        traceback.print_exc()
        for service in state["services"]:
            progress(f"--- {service.name} log (last lines) ---\n{service.tail()}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        progress("cleaning up")
        clean_up(state, var_dir)
    if result is None:
        return 1
    text, summary = result
    print(text)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
