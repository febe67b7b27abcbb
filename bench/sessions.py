"""Shared sessions benchmark: launch to first frame and memory per idle session, through the
broker and by hand, on this machine as the session host.

    .venv/bin/python bench/sessions.py [--sessions N] [--concurrency C] [--database-url URL]
                                       [--keep-going]

Run as root (the session agent and the by-hand path start processes as OS accounts).

  broker   the path a user's browser takes, with the processes `make run` starts: the portal
           (python -m config.serve config.asgi:application), a Celery worker (prefork,
           concurrency 4; no beat: nothing periodic is needed) and the session agent (celery
           worker on the host's queue, --pool threads --concurrency 8). A farm pool with one
           session host (this machine, console 127.0.0.1) and N users entitled to it, each
           logged in over HTTP beforehand (untimed). Timed: POST the launch form, the desktop
           page, its launch progress websocket to "ready", POST the console ticket, the console
           websocket, noVNC's RFB opening, to the first FramebufferUpdate.
  by hand  as root for N pre-created accounts: a VNC password file and an X cookie, then
           `runuser -u ACCOUNT -- Xvnc ...` (the agent's Xvnc options), icewm and xterm, and a
           VNC viewer (VNC authentication) to the first FramebufferUpdate.

An untimed warm-up session of each path (alone on the host: its memory is "one session alone")
is ended first. Then sessions are launched alternately (broker 1, by hand 1, broker 2, ...; C of
each at a time) and all stay up; then each is reconnected (a new console/viewer to its running
session) in the same order; then, all idle, the memory of each is read (PSS of all its
processes: broker.sessionhost.session_pss_mib, and the same /proc smaps_rollup sum by hand).

Isolation as in bench/launch.py: a temporary VDI_VAR_DIR and SQLite database (or an empty
database given with --database-url, emptied again at the end), Redis database 14 with a Celery
queue, agent queue and channel-layer prefix of this run's own, session state in a temporary
directory, OS accounts named vbs<pid % 10000>-*. Everything is removed at the end, also on
Ctrl+C and on failure: broker sessions are logged off through the broker, the by-hand ones
stopped, the accounts and their homes removed. Progress to stderr; the table to stdout, its
last line one JSON object.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is sys.path[0] when run as a script

from bench import launch
from bench.launch import BenchAborted, progress

RUN = f"vdibench-sessions-{os.getpid()}"  # Celery queue and channel-layer prefix of this run
NAME_PREFIX = "vdibench-sess-"  # session names (VDI_NAME_PREFIX)
ACCOUNT_PREFIX = f"vbs{os.getpid() % 10000}-"  # every OS account of this run
HAND_ACCOUNT_PREFIX = f"{ACCOUNT_PREFIX}hand-"
USER_PREFIX = "bench-user-"
HOST_NAME = "bench-sessions"
POOL_NAME = "bench-farm"
FIRST_HAND_DISPLAY = 700  # the agent uses :200-:699, so the two never pick the same display
WORKER_CONCURRENCY = 4  # make run's default (VDI_WORKERS)
START_TIMEOUT_S = 60
LOG_OFF_TIMEOUT_S = 60

TARGETS = {  # what the note compares against
    "new_first_frame_p50_s": 1.5,
    "reconnect_p50_s": 0.5,
    "ratio": 1.25,
    "idle_session_mb": 80,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", "-n", type=int, default=10, help="sessions per path (default 10)")
    parser.add_argument("--concurrency", "-c", type=int, default=1,
                        help="launches of a path in flight at once, and the farm's "
                             "max_concurrent_logons_per_host (default 1)")
    parser.add_argument("--database-url",
                        help="an EMPTY database instead of a temporary SQLite file; emptied again at the end")
    parser.add_argument("--keep-going", action="store_true",
                        help="count a failed launch and go on, instead of stopping the run")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one launch may take (default 120)")
    parser.add_argument("--by-hand-waits-for-wm", action="store_true",
                        help="by hand, start xterm only once icewm manages the screen, as the agent does (a "
                             "desktop whose terminal is a managed window); default: xterm right after icewm")
    parser.add_argument("--settle", type=float, default=5,
                        help="seconds of idleness before memory is read (default 5)")
    args = parser.parse_args()
    if args.sessions < 1 or args.concurrency < 1:
        parser.error("--sessions and --concurrency must be at least 1")
    return args


# -- setup ----------------------------------------------------------------------------------------


def configure_environment(args, var_dir: Path, state_dir: Path) -> None:
    """The bench's own state for itself and the processes it starts; before Django is imported."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VDI_VAR_DIR": str(var_dir),
        "DATABASE_URL": args.database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "VDI_NAME_PREFIX": NAME_PREFIX,
        "CELERY_BROKER_URL": launch.CELERY_BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": RUN,
        "VDI_AGENT_QUEUE_PREFIX": f"{RUN}.agent.",
        "CHANNEL_LAYER_URL": launch.CELERY_BROKER_URL,
        "CHANNEL_LAYER_PREFIX": RUN,
        "VDI_SESSION_ACCOUNT_PREFIX": ACCOUNT_PREFIX,
        "VDI_SESSION_STATE_DIR": str(state_dir),
        "PYTHONUNBUFFERED": "1",
    })


@dataclass
class Fixture:
    pool: object
    host: object
    users: list  # N bench users, then the warm-up user last
    password: str
    useradd_s: list[float] = field(default_factory=list)


def check_empty_database(args) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session
    from django.core.management import call_command

    from broker.models import Desktop, Host, Pool

    call_command("migrate", verbosity=0, interactive=False)
    if args.database_url and any(model.objects.exists() for model in (get_user_model(), Host, Pool, Desktop, Session)):
        raise BenchAborted("--database-url must name an EMPTY database (it has users, hosts, pools, desktops or "
                           "login sessions); the bench empties it at the end")


def create_fixture(args) -> Fixture:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from broker.models import Entitlement, Host, Pool

    pool = Pool.objects.create(
        name=POOL_NAME, display_name="Sessions benchmark", kind=Pool.Kind.FARM, max_desktops=args.sessions + 10,
        max_sessions_per_host=args.sessions + 1, max_concurrent_logons_per_host=args.concurrency)
    host = Host.objects.create(name=HOST_NAME, kind=Host.Kind.SESSION_HOST, farm=pool, console_address="127.0.0.1")
    password = secrets.token_urlsafe(12)
    hashed = make_password(password)  # once: each hash costs ~230 ms of PBKDF2
    User = get_user_model()
    names = [f"{USER_PREFIX}{i:03d}" for i in range(1, args.sessions + 1)] + [f"{USER_PREFIX}warmup"]
    User.objects.bulk_create([User(username=name, password=hashed) for name in names])
    by_name = {user.username: user for user in User.objects.filter(username__in=names)}
    users = [by_name[name] for name in names]
    Entitlement.objects.bulk_create([Entitlement(pool=pool, user=user) for user in users])
    return Fixture(pool=pool, host=host, users=users, password=password)


def create_accounts(args, fixture: Fixture) -> list:
    """The OS accounts both paths' timed sessions run under, created before the clock: a new
    session of an employee who has logged on to this host before. (The warm-up user's account is
    left to the agent: its first logon creates it, as for a new employee.)"""
    from django.conf import settings

    from broker import sessionhost

    names = [sessionhost.account_name(prefix=ACCOUNT_PREFIX, user_id=u.pk, username=u.username)
             for u in fixture.users[:args.sessions]]
    names += [f"{HAND_ACCOUNT_PREFIX}{i:03d}" for i in range(args.sessions + 1)]  # the last: the warm-up's
    accounts = []
    for name in names:
        t0 = time.perf_counter()
        accounts.append(sessionhost.ensure_account(name, home_root=settings.VDI_SESSION_HOME_ROOT))
        fixture.useradd_s.append(time.perf_counter() - t0)
    return accounts[args.sessions:]  # the by-hand accounts


def free_hand_displays(count: int) -> list[int]:
    from broker.sessionhost import displays

    in_use = {"abstract_sockets": displays._abstract_x_sockets(), "listening_ports": displays._listening_tcp_ports()}
    free = [d for d in range(FIRST_HAND_DISPLAY, FIRST_HAND_DISPLAY + count + 200)
            if not displays.display_in_use(d, **in_use)]
    if len(free) < count:
        raise BenchAborted(f"not enough free X displays from :{FIRST_HAND_DISPLAY} for the by-hand sessions")
    return free[:count]


def our_accounts() -> list[str]:
    return [entry.pw_name for entry in pwd.getpwall() if entry.pw_name.startswith(ACCOUNT_PREFIX)]


def other_xvnc_count() -> int:
    from broker.sessionhost import procfs

    return sum(1 for proc in procfs.all_processes()
               if proc.running and Path(f"/proc/{proc.pid}/comm").read_text(errors="replace").strip() == "Xvnc")


# -- the broker's processes --------------------------------------------------------------------------


def spawn(name: str, argv: list[str], var_dir: Path) -> subprocess.Popen:
    with open(var_dir / f"{name}.log", "w") as log:
        # A session of its own: Ctrl+C reaches only the bench, which stops these itself.
        return subprocess.Popen(argv, cwd=ROOT, env=os.environ, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_until_ready(name: str, process: subprocess.Popen, var_dir: Path, ready) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchAborted(f"the {name} did not start:\n{launch.tail(var_dir / f'{name}.log')}")
        time.sleep(0.1)


def start_processes(state: dict, var_dir: Path, host) -> str:
    """Portal, worker and agent as scripts/run.sh starts them (no beat); returns the portal URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    processes = state.setdefault("processes", {})
    python, celery = str(launch.BIN / "python"), launch.celery
    processes["worker"] = spawn("worker", celery("worker", "--loglevel=INFO", f"--concurrency={WORKER_CONCURRENCY}",
                                                 "-n", f"{RUN}@%h"), var_dir)
    processes["agent"] = spawn("agent", celery("worker", "-Q", host.agent_queue, "--pool", "threads",
                                               "--concurrency", "8", "-n", f"{host.agent_queue}@%h",
                                               "--loglevel=INFO"), var_dir)
    processes["portal"] = spawn("portal", [python, "-m", "config.serve", "config.asgi:application",
                                           "--host", "127.0.0.1", "--port", str(port)], var_dir)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{base_url}/login/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    for name in ("worker", "agent"):
        wait_until_ready(name, processes[name], var_dir, lambda n=name: " ready." in (var_dir / f"{n}.log").read_text())
    wait_until_ready("portal", processes["portal"], var_dir, answers)
    return base_url


def stop_processes(state: dict) -> None:
    for name in ("portal", "worker", "agent"):  # the agent last: it may be ending sessions
        process = state.get("processes", {}).get(name)
        if process is not None:
            launch.stop_worker(process)  # SIGTERM, 30 s, then SIGKILL of its process group


def purge_our_queues(host_queue: str) -> None:
    subprocess.run(launch.celery("purge", "-f", "-Q", f"{RUN},{host_queue}"), cwd=ROOT, env=os.environ,
                   capture_output=True, check=False)


def forget_our_queues() -> None:
    """Kombu's bindings of this run's queues (named after our pid: each run would add its own)."""
    import redis

    client = redis.Redis.from_url(launch.CELERY_BROKER_URL)
    for key in client.scan_iter(match=f"_kombu.binding*.{RUN}*"):
        client.delete(key)


# -- running the paths ----------------------------------------------------------------------------------


@dataclass
class PathResults:
    new: list = field(default_factory=list)
    reconnect: list = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    memory_mib: list[float] = field(default_factory=list)
    memory_by_process: dict[str, float] = field(default_factory=dict)


def run_batch(label: str, jobs: list, concurrency: int, results: list, failures: list, keep_going: bool) -> list:
    """jobs: (who, callable returning a Sample), at most `concurrency` at once; returns who
    succeeded. A failure stops the run unless --keep-going."""
    from bench.sessions_clients import LaunchFailed

    ok = []
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=label) as executor:
        futures = [(who, executor.submit(job)) for who, job in jobs]
        try:
            for who, future in futures:
                try:
                    sample = future.result()
                except (LaunchFailed, OSError) as exc:
                    failures.append(f"{label} {who + 1}: {exc}")
                    progress(f"  {label} {who + 1} FAILED: {exc}")
                    if not keep_going:
                        raise BenchAborted(f"{label} {who + 1}: {exc}") from None
                    continue
                results.append(sample)
                ok.append(who)
                progress(f"  {label} {who + 1}: first frame after {sample.first_frame_s:.3f} s")
        except BaseException:
            launch.STOP.set()  # the other threads give up their waits
            raise
    return ok


def broker_side_intervals(sample) -> dict[str, float]:
    """Where the progress phase went, from the session row and its state changes (one clock)."""
    from broker.models import Desktop, DesktopEvent

    created = Desktop.objects.values_list("created_at", flat=True).get(pk=sample.desktop_id).timestamp()
    at = {}
    for to_state, when in (DesktopEvent.objects.filter(desktop_id=sample.desktop_id).exclude(to_state="")
                           .order_by("created_at", "id").values_list("to_state", "created_at")):
        at.setdefault(to_state, when.timestamp())
    return {"queued_to_placed": at["starting"] - created, "agent_start": at["running"] - at["starting"],
            "running_to_page_ready": sample.wall_ready - at["running"]}


def session_memory(session_name: str, state_dir: str) -> tuple[float, dict[str, float]]:
    """session_pss_mib, and the same PSS by process name (for "where the memory goes")."""
    from broker import sessionhost
    from broker.sessionhost import procfs

    total = sessionhost.session_pss_mib(session_name, state_dir=state_dir)
    by_name: dict[str, float] = {}
    for proc in procfs.running_processes(
            lambda p: (procfs.environment_value(p.pid, "VDI_SESSION") or "").startswith(f"{session_name}/")):
        name = _comm(proc.pid)
        by_name[name] = by_name.get(name, 0) + procfs.pss_kib(proc.pid) / 1024
    return total, by_name


def hand_memory(session) -> tuple[float, dict[str, float]]:
    from broker.sessionhost import procfs

    parents = {p.pid for p in session.processes if p.poll() is None}
    by_name: dict[str, float] = {}
    for proc in procfs.running_processes(lambda p: p.owned_by(session.account.uid) or p.pid in parents):
        name = _comm(proc.pid)
        by_name[name] = by_name.get(name, 0) + procfs.pss_kib(proc.pid) / 1024
    return session.pss_mib(), by_name


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def wait_for_log_off(desktop_ids: list[int], timeout_s: float) -> list[int]:
    """Until the agent has ended the sessions (their rows deleted); returns those still live."""
    from broker.models import Desktop
    from broker.models.desktops import LIVE_STATES

    deadline = time.monotonic() + timeout_s
    while True:
        live = list(Desktop.objects.filter(pk__in=desktop_ids, state__in=LIVE_STATES).values_list("pk", flat=True))
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.1)


def log_off_through_broker(desktop_ids: list[int], timeout_s: float = LOG_OFF_TIMEOUT_S) -> list[int]:
    """The portal's Log off (end_desktop_session, what POST /desktops/<id>/end/ calls)."""
    from django.db import transaction

    from broker.models import Desktop
    from broker.models.desktops import LIVE_STATES
    from broker.services.desktop_sessions import end_desktop_session

    for desktop in Desktop.objects.filter(pk__in=desktop_ids, state__in=LIVE_STATES).select_related("pool", "host"):
        with transaction.atomic():
            end_desktop_session(desktop=desktop, actor=desktop.user, reason="benchmark done")
    return wait_for_log_off(desktop_ids, timeout_s)


def run(args, var_dir: Path, state: dict):
    """Everything that creates something records it in `state`, for clean_up()."""
    load_at_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())  # before our own setup adds to it
    if os.geteuid() != 0:
        raise BenchAborted("run as root: the session agent and the by-hand sessions start processes as OS accounts")
    if our_accounts():
        raise BenchAborted(f"OS accounts named {ACCOUNT_PREFIX}* exist already (another run?): {our_accounts()[:5]}")
    state_dir = Path(tempfile.mkdtemp(prefix="vdibench-sessions-state-"))
    state_dir.chmod(0o711)  # the accounts' Xvnc reach their files under it (broker/sessionhost/records.py)
    state["state_dir"] = state_dir
    configure_environment(args, var_dir, state_dir)
    import django

    django.setup()
    from django.db import connection

    from bench.sessions_clients import BrowserUser, HandSession, stop_hand_sessions
    from broker.models import Desktop
    from broker.session_agent import state_dir_of
    from broker.sessionhost import displays

    progress("migrating a fresh database; creating the farm, its session host and the users")
    check_empty_database(args)
    state["database"] = bool(args.database_url)
    fixture = create_fixture(args)
    state["host"] = fixture.host
    progress(f"creating {2 * args.sessions + 1} OS accounts ({ACCOUNT_PREFIX}*), untimed")
    hand_accounts = create_accounts(args, fixture)
    displays.ensure_x_socket_dir()
    hand_displays = free_hand_displays(args.sessions + 1)
    others_at_start = other_xvnc_count()

    progress(f"starting the portal, a Celery worker and the session agent (queue {fixture.host.agent_queue})")
    purge_our_queues(fixture.host.agent_queue)
    base_url = start_processes(state, var_dir, fixture.host)
    host_state_dir = state_dir_of(fixture.host)
    stop = launch.STOP

    def browser(user) -> BrowserUser:
        return BrowserUser(base_url=base_url, username=user.username, password=fixture.password,
                           pool_id=fixture.pool.pk, timeout_s=args.timeout, stop=stop)

    browsers = [browser(u) for u in fixture.users]
    hands = [HandSession(account=a, display=d, timeout_s=args.timeout, stop=stop,
                         wait_for_wm=args.by_hand_waits_for_wm)
             for a, d in zip(hand_accounts, hand_displays)]
    state["hands"] = []  # started ones, for clean_up
    progress(f"logging {len(browsers)} users in over HTTP (untimed)")
    for b in browsers:
        b.log_in()

    # Warm-up, untimed: the processes' first requests, tasks and connections; each path's session
    # alone on the host gives "one session alone".
    progress("warm-up: one broker session (its account created at this first logon), alone")
    warm_broker, warm_hand = browsers[-1], hands[-1]
    warm_sample = warm_broker.launch_to_first_frame(warm_broker.home_page_token())
    time.sleep(args.settle)
    warm_name = Desktop.objects.values_list("name", flat=True).get(pk=warm_sample.desktop_id)
    alone_broker = session_memory(warm_name, host_state_dir)
    if log_off_through_broker([warm_sample.desktop_id]):
        raise BenchAborted("the warm-up session was not logged off")
    progress("warm-up: one by-hand session, alone")
    state["hands"].append(warm_hand)
    warm_hand_sample = warm_hand.start_to_first_frame()
    time.sleep(args.settle)
    alone_hand = hand_memory(warm_hand)
    stop_hand_sessions([warm_hand])

    broker, hand = PathResults(), PathResults()
    ready_broker, ready_hand = [], []
    C = args.concurrency
    for first in range(0, args.sessions, C):
        batch = range(first, min(first + C, args.sessions))
        progress(f"new sessions {first + 1}-{batch[-1] + 1} of {args.sessions}: broker, then by hand")
        ready_broker += run_batch("broker new", [
            (i, lambda b=browsers[i]: b.launch_to_first_frame(b.home_page_token())) for i in batch],
            C, broker.new, broker.failures, args.keep_going)
        state["hands"] += [hands[i] for i in batch]
        ready_hand += run_batch("by-hand new", [(i, hands[i].start_to_first_frame) for i in batch],
                                C, hand.new, hand.failures, args.keep_going)
    for sample in broker.new:
        sample.phases.update(broker_side_intervals(sample))

    for first in range(0, args.sessions, C):
        batch = range(first, min(first + C, args.sessions))
        progress(f"reconnects {first + 1}-{batch[-1] + 1} of {args.sessions}: broker, then by hand")
        run_batch("broker reconnect", [(i, lambda b=browsers[i]: b.launch_to_first_frame(b.home_page_token()))
                                       for i in batch if i in ready_broker], C, broker.reconnect, broker.failures,
                  args.keep_going)
        run_batch("by-hand reconnect", [(i, hands[i].connect_to_first_frame) for i in batch if i in ready_hand],
                  C, hand.reconnect, hand.failures, args.keep_going)

    progress(f"all sessions up and idle: {args.settle:g} s, then memory")
    time.sleep(args.settle)
    names = dict(Desktop.objects.filter(pk__in=[s.desktop_id for s in broker.new]).values_list("pk", "name"))
    for path, figures in ((broker, [session_memory(names[s.desktop_id], host_state_dir) for s in broker.new]),
                          (hand, [hand_memory(hands[i]) for i in ready_hand])):
        path.memory_mib = [total for total, _ in figures]
        for _total, by_name in figures:
            for name, mib in by_name.items():
                path.memory_by_process[name] = path.memory_by_process.get(name, 0) + mib / len(figures)
    context = {
        "load_at_start": load_at_start, "load_at_end": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "other_xvnc_at_start": others_at_start, "database": connection.vendor,
        "useradd_p50_s": statistics.median(fixture.useradd_s), "base_url": base_url,
        "warmup_broker_s": warm_sample.first_frame_s, "warmup_hand_s": warm_hand_sample.first_frame_s,
        "alone_broker": alone_broker, "alone_hand": alone_hand,
        "queue": fixture.host.agent_queue,
    }
    return report(args, broker, hand, context), summary_json(args, broker, hand, context)


# -- report ----------------------------------------------------------------------------------------------

PHASE_LABELS = {
    "launch_post": "launch POST", "desktop_page": "desktop page", "progress_to_ready": "progress to ready",
    "ticket": "ticket", "console_open": "console websocket", "rfb_to_serverinit": "RFB to ServerInit",
    "first_frame": "first frame", "queued_to_placed": "queued→placed", "agent_start": "agent start",
    "running_to_page_ready": "running→page sees ready", "password_and_cookie": "password file+X cookie",
    "xvnc_to_rfb": "Xvnc to RFB", "start_icewm_xterm": "start icewm+xterm",
}
BROKER_SIDE = ("queued_to_placed", "agent_start", "running_to_page_ready")


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def first_frames(samples) -> list[float]:
    return [s.first_frame_s for s in samples]


def phase_p50s(samples, *, names=None) -> dict[str, float]:
    if not samples:
        return {}
    names = names or [n for n in samples[0].phases if n not in BROKER_SIDE]
    return {n: statistics.median(s.phases[n] for s in samples) for n in names}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def figures(args, broker: PathResults, hand: PathResults) -> dict:
    def mean(values):
        return statistics.fmean(values) if values else None

    new_p50, hand_new_p50 = percentile(first_frames(broker.new), 0.5), percentile(first_frames(hand.new), 0.5)
    re_p50, hand_re_p50 = (percentile(first_frames(broker.reconnect), 0.5),
                           percentile(first_frames(hand.reconnect), 0.5))
    return {
        "sessions": args.sessions, "concurrency": args.concurrency, "by_hand_waits_for_wm": args.by_hand_waits_for_wm,
        "ready": len(broker.new), "ready_by_hand": len(hand.new),
        "new_first_frame_p50_s": new_p50, "new_first_frame_p99_s": percentile(first_frames(broker.new), 0.99),
        "reconnect_p50_s": re_p50, "reconnect_p99_s": percentile(first_frames(broker.reconnect), 0.99),
        "by_hand_new_first_frame_p50_s": hand_new_p50,
        "by_hand_new_first_frame_p99_s": percentile(first_frames(hand.new), 0.99),
        "by_hand_reconnect_p50_s": hand_re_p50,
        "by_hand_reconnect_p99_s": percentile(first_frames(hand.reconnect), 0.99),
        "ratio": ratio(new_p50, hand_new_p50), "reconnect_ratio": ratio(re_p50, hand_re_p50),
        "idle_session_mb": mean(broker.memory_mib), "idle_session_mb_by_hand": mean(hand.memory_mib),
    }


def targets(args, f: dict) -> list[tuple[str, str, str]]:
    """(target, value, met) rows."""
    def met(ok):
        return "—" if ok is None else ("yes" if ok else "no")

    def below(value, limit, inclusive=False):
        if value is None:
            return None
        return value <= limit if inclusive else value < limit

    return [
        ("all 50 broker sessions ready", f"{f['ready']}/{args.sessions}",
          met(f["ready"] == args.sessions) if args.sessions >= 50 else "— (N < 50)"),
        ("new session first frame p50 < 1.5 s", _s(f["new_first_frame_p50_s"]),
         met(below(f["new_first_frame_p50_s"], TARGETS["new_first_frame_p50_s"]))),
        ("reconnect first frame p50 < 0.5 s", _s(f["reconnect_p50_s"]),
         met(below(f["reconnect_p50_s"], TARGETS["reconnect_p50_s"]))),
        ("broker/by hand, new p50 <= 1.25", _x(f["ratio"]), met(below(f["ratio"], TARGETS["ratio"], inclusive=True))),
        ("idle session < 80 MB (MiB here)", _mib(f["idle_session_mb"]),
         met(below(f["idle_session_mb"], TARGETS["idle_session_mb"]))),
    ]


def _s(value) -> str:
    return "—" if value is None else f"{value:.3f} s"


def _x(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _mib(value) -> str:
    return "—" if value is None else f"{value:.1f} MiB"


def _phases(p50s: dict[str, float]) -> str:
    return " | ".join(f"{PHASE_LABELS.get(n, n)} {v:.3f}" for n, v in p50s.items())


def _memory(by_process: dict[str, float]) -> str:
    return ", ".join(f"{name} {mib:.1f}" for name, mib in sorted(by_process.items(), key=lambda kv: -kv[1]))


def report(args, broker: PathResults, hand: PathResults, context: dict) -> str:
    f = figures(args, broker, hand)
    alone_broker, alone_hand = context["alone_broker"], context["alone_hand"]
    via = [s.progress_via for s in broker.new + broker.reconnect]

    def row(label, a, b, r=""):
        return f"  {label:<34}{a:>14}{b:>14}{r:>16}"

    lines = [
        (f"Shared sessions benchmark: {args.sessions} sessions per path, concurrency {args.concurrency}, database "
         f"{context['database']}; host {os.cpu_count()} CPUs, load average {context['load_at_start']} at start, "
         f"{context['load_at_end']} at end; {context['other_xvnc_at_start']} Xvnc not the bench's running at start."),
        ("broker:  the portal (python -m config.serve config.asgi:application), a Celery worker (prefork, "
         f"concurrency {WORKER_CONCURRENCY}; no beat: nothing periodic is needed) and the session agent"),
        (f"         (celery -A config worker -Q {context['queue']} --pool threads --concurrency 8); a farm with one "
         f"session host (this machine, console 127.0.0.1), max_concurrent_logons_per_host {args.concurrency}."),
        ("         Timed: POST launch, desktop page, launch progress websocket to ready, POST console ticket, console "
         "websocket, noVNC's RFB opening, first FramebufferUpdate header."),
        ("by hand: as root, a VNC password file and an X cookie (xauth), runuser -u ACCOUNT -- Xvnc (the agent's "
         "options), icewm, xterm; a VNC viewer (VNC authentication) to the first FramebufferUpdate header."),
        ("Order:   untimed warm-up (one session per path, each alone, then ended); new sessions alternately (broker "
         f"1, by hand 1, broker 2, ...; {args.concurrency} of a path at a time), all kept up; reconnects in the "
         f"same order; memory after {args.settle:g} s idle with all up."),
        "",
        row("", "broker", "by hand", "broker/by hand"),
        row("new session first frame  p50", _s(f["new_first_frame_p50_s"]), _s(f["by_hand_new_first_frame_p50_s"]),
            _x(f["ratio"])),
        row("                         p99", _s(f["new_first_frame_p99_s"]), _s(f["by_hand_new_first_frame_p99_s"]),
            _x(ratio(f["new_first_frame_p99_s"], f["by_hand_new_first_frame_p99_s"]))),
        row("reconnect first frame    p50", _s(f["reconnect_p50_s"]), _s(f["by_hand_reconnect_p50_s"]),
            _x(f["reconnect_ratio"])),
        row("                         p99", _s(f["reconnect_p99_s"]), _s(f["by_hand_reconnect_p99_s"]),
            _x(ratio(f["reconnect_p99_s"], f["by_hand_reconnect_p99_s"]))),
        row("reached a first frame", f"{f['ready']}/{args.sessions}", f"{f['ready_by_hand']}/{args.sessions}"),
        row("idle session PSS, all up   mean", _mib(f["idle_session_mb"]), _mib(f["idle_session_mb_by_hand"]),
            _x(ratio(f["idle_session_mb"], f["idle_session_mb_by_hand"]))),
        row("                           min", _mib(min(broker.memory_mib, default=None)),
            _mib(min(hand.memory_mib, default=None))),
        row("                           max", _mib(max(broker.memory_mib, default=None)),
            _mib(max(hand.memory_mib, default=None))),
        row("one session alone (warm-up)", _mib(alone_broker[0]), _mib(alone_hand[0]),
            _x(ratio(alone_broker[0], alone_hand[0]))),
        "",
        "Where the time goes, p50 of each phase (s):",
        f"  broker new         {_phases(phase_p50s(broker.new))}",
        f"    progress, from the session's events: {_phases(phase_p50s(broker.new, names=BROKER_SIDE))}",
        f"  broker reconnect   {_phases(phase_p50s(broker.reconnect))}",
        f"  by hand new        {_phases(phase_p50s(hand.new))}",
        f"  by hand reconnect  {_phases(phase_p50s(hand.reconnect))}",
        (f"  warm-up (untimed): broker {context['warmup_broker_s']:.3f} s (its account created by the agent at this "
         f"first logon; useradd alone p50 {context['useradd_p50_s']:.3f} s), by hand {context['warmup_hand_s']:.3f} s"),
        "Where the memory goes, mean PSS per idle session by process (MiB):",
        f"  broker   {_memory(broker.memory_by_process)}",
        f"  by hand  {_memory(hand.memory_by_process)}",
        f"  alone: broker {_memory(alone_broker[1])}; by hand {_memory(alone_hand[1])}",
        (f"Launch progress: {via.count('websocket')} followed on the websocket, {via.count('polling')} by polling "
         "/status/ (its fallback)."),
        "",
        f"  {'target (from the issue)':<40}{'value':>14}  met",
    ]
    lines += [f"  {name:<40}{value:>14}  {ok}" for name, value, ok in targets(args, f)]
    lines += [
        "",
        "Deviations from a real browser and notes:",
        ("  - Each user logged in over HTTP (the login form) before the clock; the home page's form is read "
         "untimed before each Launch/Connect."),
        ("  - The page's static files (console.js, noVNC) are not fetched (a returning browser has them cached); "
         "urllib opens a TCP connection per request where a browser keeps one alive."),
        ("  - Both paths' timed sessions run under OS accounts created beforehand (an employee who logged on to "
         "this host before); a new employee's first logon adds useradd (see the warm-up)."),
        ("  - By hand, xterm is started only once icewm manages the screen, as the agent does (--by-hand-waits-for-wm)."
         if args.by_hand_waits_for_wm else
         "  - By hand, xterm is started right after icewm; the agent waits until icewm manages the screen before "
         "it starts xterm and reports the session running (--by-hand-waits-for-wm does the same by hand)."),
        ("  - PSS in MiB (smaps' kB are KiB); the by-hand figure includes the root runuser parents, as the broker's "
         "includes its root supervisor shell. p99: linear interpolation (with N < 100, between the two slowest)."),
    ]
    failures = broker.failures + hand.failures
    if failures:
        lines += ["", f"Failures ({len(failures)}):"] + [f"  {failure}" for failure in failures]
    return "\n".join(lines)


def summary_json(args, broker: PathResults, hand: PathResults, context: dict) -> dict:
    def rounded(value, digits=4):
        if isinstance(value, dict):
            return {k: rounded(v, digits) for k, v in value.items()}
        return round(value, digits) if isinstance(value, float) else value

    f = figures(args, broker, hand)
    return rounded({
        **f,
        "alone_session_mb": context["alone_broker"][0], "alone_session_mb_by_hand": context["alone_hand"][0],
        "targets_met": {name: ok for name, _value, ok in targets(args, f)},
        "phases_p50_s": {
            "broker_new": phase_p50s(broker.new), "broker_new_events": phase_p50s(broker.new, names=BROKER_SIDE),
            "broker_reconnect": phase_p50s(broker.reconnect), "by_hand_new": phase_p50s(hand.new),
            "by_hand_reconnect": phase_p50s(hand.reconnect)},
        "idle_session_mb_by_process": broker.memory_by_process,
        "idle_session_mb_by_process_by_hand": hand.memory_by_process,
        "progress_via_polling": sum(s.progress_via == "polling" for s in broker.new + broker.reconnect),
        "database": context["database"], "load_at_start": context["load_at_start"],
        "load_at_end": context["load_at_end"], "warmup_broker_s": context["warmup_broker_s"],
        "useradd_p50_s": context["useradd_p50_s"], "failures": len(broker.failures) + len(hand.failures),
        "beat": False, "login": "HTTP login form, untimed",
    })


# -- cleanup --------------------------------------------------------------------------------------------


def clean_up(state: dict, var_dir: Path) -> list[str]:
    """Undo whatever run() got to; every step is tried even if an earlier one fails. Returns
    what is still there (["?"] for a step that failed), for the exit status."""
    left: list[str] = []

    def attempt(what, step):
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next step
            progress(f"cleanup: {what} failed: {exc!r}")
            left.append("?")

    host = state.get("host")
    if host is not None and "processes" in state:
        def log_off_all():
            from broker.models import Desktop

            ids = list(Desktop.objects.filter(pool__name=POOL_NAME).values_list("pk", flat=True))
            still = log_off_through_broker(ids)
            progress(f"logged {len(ids)} broker session(s) off through the broker"
                     + (f"; {len(still)} not ended by the agent in time" if still else ""))
        attempt("logging the broker sessions off", log_off_all)
    attempt("stopping the portal, worker and agent", lambda: stop_processes(state))
    if host is not None:
        attempt("purging our queues", lambda: purge_our_queues(host.agent_queue))
        attempt("forgetting our queues", forget_our_queues)
    state_dir = state.get("state_dir")
    if state_dir is not None and "django" in sys.modules:
        def end_left_sessions():
            from broker import sessionhost

            for directory in Path(state_dir).glob("*/"):
                for info in sessionhost.list_sessions(state_dir=str(directory)):
                    progress(f"cleanup: ending session {info.session_name} directly (the agent did not)")
                    sessionhost.end_session(session_name=info.session_name, state_dir=str(directory))
        attempt("ending sessions left on the host", end_left_sessions)
    if state.get("hands"):
        from bench.sessions_clients import stop_hand_sessions

        survivors = attempt("stopping the by-hand sessions", lambda: stop_hand_sessions(state["hands"]))
        left += [f"pid {pid}" for pid in survivors or []]

    def remove_accounts():
        from broker import sessionhost

        for name in our_accounts():
            sessionhost.remove_account(name)
        for home in Path("/home").glob(f"{ACCOUNT_PREFIX}*"):
            shutil.rmtree(home, ignore_errors=True)
    if "django" in sys.modules:
        attempt("removing the OS accounts", remove_accounts)
    left += our_accounts()
    if state_dir is not None:
        shutil.rmtree(state_dir, ignore_errors=True)
    if state.get("database"):
        def empty_database():
            from django.core.management import call_command
            from django.db import connections

            connections.close_all()
            call_command("flush", interactive=False, verbosity=0)
        attempt("emptying the database", empty_database)
    shutil.rmtree(var_dir, ignore_errors=True)
    if left:
        progress(f"cleanup incomplete: {left}")
    return left


def main() -> int:
    return launch.run_bench(run, args=parse_args(), temp_prefix="vdibench-sessions-", clean_up=clean_up)


if __name__ == "__main__":
    sys.exit(main())
