"""Launch benchmark: seconds from nothing to a running desktop, through the broker and by hand.

    .venv/bin/python bench/launch.py [--desktops N] [--concurrency C]

Both paths build the same guest (linked qcow2 clone of the golden image, the broker's own
domain XML, the pool's vCPUs and memory) on this machine's libvirtd:

  direct  libvirt-python calls from threads: createXML volume, defineXML, create, XMLDesc.
  broker  broker.services.assignment.launch_desktop() from threads, a real Celery worker
          (prefork, --concurrency C) doing the work, the Desktop row polled every 20 ms.

"running" is the domain running with its VNC port known (the broker: the row says running);
"ready" is that port answering b"RFB". At most C desktops of a path are in flight at once.
By default the paths alternate in rounds of C desktops (direct, broker, broker, direct, ...)
and each round's guests are removed before the next, so the load of whatever else runs on
the host falls on both alike; --schedule direct-first runs all N of one path, then the other.

Everything runs in isolation: a temporary VDI_VAR_DIR and SQLite database (or an empty
database given with --database-url), Redis database 14 for Celery, and the name prefix
vdibench-launch- for every domain, volume and serial log (bench/provisioning.py uses
vdibench-prov-, so each removes only its own); all of them are removed at the end, also
on Ctrl+C. The table goes to stdout, its last line is one JSON object; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAME_PREFIX = "vdibench-launch-"
CELERY_BROKER_URL = "redis://127.0.0.1:6379/14"
LIBVIRT_URI = "qemu:///system"
DEFAULT_IMAGE = "/var/lib/vdi/images/demo-linux-v4.qcow2"
POLL_S = 0.02
WORKER_START_TIMEOUT_S = 60
_T_START = time.monotonic()

# Set on Ctrl+C or a failed launch: every waiting loop in the launcher threads gives up.
STOP = threading.Event()


class BenchAborted(Exception):
    pass


# -- setup ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--desktops", "-n", type=int, default=5, help="desktops per path (default 5)")
    parser.add_argument("--concurrency", "-c", type=int, default=1,
                        help="launches in flight at once, and Celery worker processes (default 1)")
    parser.add_argument("--database-url",
                        help="an EMPTY database to use instead of a temporary SQLite file; the rows the "
                             "bench creates are deleted at the end, the tables stay")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"golden image (default {DEFAULT_IMAGE})")
    parser.add_argument("--schedule", choices=["alternate", "direct-first", "broker-first"], default="alternate",
                        help="alternate: rounds of C desktops, direct broker broker direct ..., the host "
                             "cleared after each round (default); direct-first / broker-first: all N of "
                             "one path, guests kept until it is done, then all N of the other")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one desktop may take (default 300)")
    parser.add_argument("--per-desktop", action="store_true", help="also print every desktop's times")
    args = parser.parse_args()
    if args.desktops < 1 or args.concurrency < 1:
        parser.error("--desktops and --concurrency must be at least 1")
    return args


def configure_environment(args, var_dir: Path) -> None:
    """Point settings at the bench's own state; must run before Django is imported."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VDI_VAR_DIR": str(var_dir),
        "DATABASE_URL": args.database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}",
        "VDI_NAME_PREFIX": NAME_PREFIX,
        "CELERY_BROKER_URL": CELERY_BROKER_URL,
        # Console-control messages (none expected) must not reach a running portal's consumers.
        "CHANNEL_LAYER_PREFIX": "vdibench",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        # The services log every transition at INFO; the bench reports its own figures.
        "VDI_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    # bench/ is sys.path[0] when run as a script; the project packages live one level up.
    sys.path.insert(0, str(ROOT))


@dataclass
class Fixture:
    host: object
    pool: object
    users: list
    warmup_user: object
    load_at_start: str = ""
    other_domains: int = 0


def migrate_empty_database(args) -> None:
    from django.core.management import call_command

    from broker.models import Host

    call_command("migrate", verbosity=0, interactive=False)
    if args.database_url and Host.objects.exists():
        raise BenchAborted("--database-url must name an empty database (it has hosts already)")


def create_fixture(args) -> Fixture:
    from django.contrib.auth import get_user_model

    from broker.hypervisor import HypervisorError
    from broker.models import Entitlement, GoldenImage, Host, Pool
    from broker.services.images import publish_image_version

    host = Host.objects.create(name="local", libvirt_uri=LIBVIRT_URI, domain_type="qemu")
    image = GoldenImage.objects.create(name="bench-linux", display_name="Bench Linux")
    try:
        publish_image_version(image=image, path=args.image, host=host, notes="launch benchmark")
    except HypervisorError as exc:
        raise BenchAborted(f"{exc} (build it with scripts/build-golden-image.sh {args.image})") from exc
    # Model defaults (1 vCPU, 256 MiB, linked clones): what a pool gets unless an admin changes it,
    # except where the model has these knobs: no size cap below what the bench launches, and no
    # data disk (the direct path builds the system disk only, so both guests stay identical).
    # The name is the middle of the domain names: vdibench-launch-broker-....
    pool_fields = {f.name for f in Pool._meta.get_fields()}
    knobs = {"max_desktops": args.desktops + 1, "data_disk_gib": 0}
    pool = Pool.objects.create(name="broker", display_name="Launch benchmark", image=image,
                               **{name: value for name, value in knobs.items() if name in pool_fields})
    User = get_user_model()
    users = [User.objects.create_user(username=f"{NAME_PREFIX}{i:03d}") for i in range(args.desktops + 1)]
    Entitlement.objects.bulk_create([Entitlement(pool=pool, user=user) for user in users])
    return Fixture(host=host, pool=pool, users=users[1:], warmup_user=users[0])


def delete_fixture_rows() -> None:
    """Rows in a database the caller gave us (a temporary SQLite file just goes away)."""
    from django.contrib.auth import get_user_model

    from broker.models import Desktop, GoldenImage, Host, Pool

    Desktop.objects.filter(pool__name="broker").delete()  # events cascade
    Pool.objects.filter(name="broker").delete()  # entitlements cascade
    GoldenImage.objects.filter(name="bench-linux").delete()  # versions cascade
    Host.objects.filter(name="local", libvirt_uri=LIBVIRT_URI).delete()
    get_user_model().objects.filter(username__startswith=NAME_PREFIX).delete()


# -- Celery worker --------------------------------------------------------------------------


def celery(*argv: str) -> list[str]:
    return [str(BIN / "celery"), "-A", "config", *argv]


def purge_queue() -> None:
    subprocess.run(celery("purge", "-f"), cwd=ROOT, env=os.environ, check=True, capture_output=True)
    # A worker killed mid-task leaves its message in kombu's "unacked" hash, which purge does not
    # touch and the next worker would restore: a stale desktop id pointing into a fresh database.
    import redis

    redis.Redis.from_url(CELERY_BROKER_URL).delete("unacked", "unacked_index", "unacked_mutex")


def start_worker(concurrency: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    # A session of its own: Ctrl+C in the terminal reaches only the bench, which stops the worker
    # itself before removing domains (a worker still provisioning could otherwise recreate one).
    process = subprocess.Popen(
        celery("worker", f"--concurrency={concurrency}", "--without-mingle", "--without-gossip",
               "-l", "INFO", "--hostname", f"vdibench-{os.getpid()}@%h"),
        cwd=ROOT, env=os.environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchAborted(f"the Celery worker exited with {process.returncode}:\n{tail(log_path)}")
        if " ready." in log_path.read_text():
            return process
        time.sleep(0.1)
    stop_worker(process)
    raise BenchAborted(f"the Celery worker was not ready after {WORKER_START_TIMEOUT_S} s:\n{tail(log_path)}")


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # warm shutdown: finishes the task at hand
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # pool children left behind, if any
    except ProcessLookupError:
        pass
    process.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Sample:
    name: str
    to_running_s: float
    to_ready_s: float
    steps: dict[str, float] = field(default_factory=dict)


@dataclass
class PathTimings:
    path: str
    samples: list[Sample]
    total_s: float


def raise_if_stopped() -> None:
    if STOP.is_set():
        raise BenchAborted("stopped")


def check_stop(deadline: float, what: str) -> None:
    raise_if_stopped()
    if time.perf_counter() > deadline:
        raise BenchAborted(f"timed out waiting for {what}")


def wait_for_rfb(port: int, deadline: float) -> None:
    """Until the VNC server greets: the first 3 bytes of the RFB protocol version string."""
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                greeting = b""
                while len(greeting) < 3:
                    chunk = sock.recv(3 - len(greeting))
                    if not chunk:
                        break
                    greeting += chunk
                if greeting == b"RFB":
                    return
        except OSError:
            pass
        check_stop(deadline, f"RFB on port {port}")
        time.sleep(POLL_S)


def launch_batch(path: str, launch_one, jobs: list, concurrency: int) -> PathTimings:
    """Launch every job with at most `concurrency` in flight; total = first call to last ready."""
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=path)
    start = time.perf_counter()
    try:
        futures = [executor.submit(launch_one, job) for job in jobs]
        samples = []
        for number, future in enumerate(futures, 1):
            samples.append(future.result())
            progress(f"  {path} {number}/{len(jobs)} ready in {samples[-1].to_ready_s:.2f} s")
    except BaseException:
        STOP.set()  # the other threads stop waiting; queued jobs are cancelled below
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return PathTimings(path=path, samples=samples, total_s=time.perf_counter() - start)


# -- direct path ----------------------------------------------------------------------------


class DirectLauncher:
    """The reference: the minimum libvirt calls that give the same running guest."""

    def __init__(self, conn, fixture: Fixture, image_path: str, timeout_s: float):
        from django.conf import settings

        self.conn = conn  # libvirt connections are thread-safe; one shared, opened before timing
        self.host, self.pool = fixture.host, fixture.pool
        self.storage = conn.storagePoolLookupByName(settings.VDI_STORAGE_POOL)
        # Read once before timing; the broker re-reads the golden image on every clone.
        golden = conn.storageVolLookupByPath(image_path)
        self.golden_path, self.golden_capacity = golden.path(), golden.info()[1]
        self.timeout_s = timeout_s

    def guest_spec(self, name: str):
        """The broker's own DomainSpec for a desktop of this pool (an unsaved row, never written),
        so the direct guest stays identical to the broker's whatever provisioning adds to it."""
        from broker.models import Desktop
        from broker.services.provisioning import domain_spec

        spec = domain_spec(Desktop(host=self.host, pool=self.pool, name=name))
        return replace(spec, metadata={"desktop": "direct", "pool": self.pool.name})

    def launch(self, _job=None) -> Sample:
        from broker.hypervisor.xml import domain_xml, read_graphics_ports, volume_xml

        raise_if_stopped()
        name = f"{NAME_PREFIX}direct-{uuid.uuid4().hex[:10]}"
        spec = self.guest_spec(name)  # pure Python, before the clock starts
        t0 = time.perf_counter()
        volume = self.storage.createXML(
            volume_xml(name=f"{name}.qcow2", capacity_bytes=self.golden_capacity, backing_path=self.golden_path), 0
        )
        t_cloned = time.perf_counter()
        if volume.path() != spec.system_disk_path:
            raise BenchAborted(f"storage pool {self.storage.name()} is not at {self.host.storage_path}")
        domain = self.conn.defineXML(domain_xml(spec))
        t_defined = time.perf_counter()
        domain.create()
        t_started = time.perf_counter()
        port = read_graphics_ports(domain.XMLDesc(0)).vnc
        t_running = time.perf_counter()
        if port is None:
            raise BenchAborted(f"{name} runs but shows no VNC port")
        wait_for_rfb(port, t0 + self.timeout_s)
        t_ready = time.perf_counter()
        return Sample(
            name=name,
            to_running_s=t_running - t0,
            to_ready_s=t_ready - t0,
            steps={
                "clone": t_cloned - t0,
                "define": t_defined - t_cloned,
                "start": t_started - t_defined,
                "read_ports": t_running - t_started,
                "running_to_rfb": t_ready - t_running,
            },
        )

    def remove_all(self) -> None:
        remove_bench_leftovers(self.conn, self.storage.name(), self.host.serial_log_dir,
                               prefix=f"{NAME_PREFIX}direct-")


# -- broker path ----------------------------------------------------------------------------


class BrokerLauncher:
    """A user pressing Launch: the portal's call, then the Desktop row watched until running."""

    def __init__(self, fixture: Fixture, timeout_s: float):
        self.pool = fixture.pool
        self.timeout_s = timeout_s
        self.desktop_ids: list[int] = []
        self._lock = threading.Lock()

    def launch(self, user) -> Sample:
        from django.db import connections

        from broker.models import Desktop, DesktopState
        from broker.services.assignment import launch_desktop
        from broker.services.errors import LaunchRefused

        raise_if_stopped()
        try:
            wall0, t0 = time.time(), time.perf_counter()
            try:
                desktop = launch_desktop(user=user, pool=self.pool)
            except LaunchRefused as exc:
                raise BenchAborted(f"the broker refused the launch: {exc}") from exc
            with self._lock:
                self.desktop_ids.append(desktop.pk)
            deadline = t0 + self.timeout_s
            while True:
                state, vnc_port, error = (Desktop.objects.filter(pk=desktop.pk)
                                          .values_list("state", "vnc_port", "last_error").get())
                if state == DesktopState.RUNNING:
                    break
                if state == DesktopState.FAILED:
                    raise BenchAborted(f"{desktop.name} failed: {error}")
                check_stop(deadline, f"{desktop.name} to run")
                time.sleep(POLL_S)
            wall_seen, t_running = time.time(), time.perf_counter()
            wait_for_rfb(vnc_port, deadline)
            t_ready = time.perf_counter()
            return Sample(
                name=desktop.name,
                to_running_s=t_running - t0,
                to_ready_s=t_ready - t0,
                steps={**self._steps_from_events(desktop.pk, wall0, wall_seen), "running_to_rfb": t_ready - t_running},
            )
        finally:
            connections.close_all()  # this thread's connections; after the clock has stopped

    @staticmethod
    def _steps_from_events(desktop_id: int, wall0: float, wall_seen: float) -> dict[str, float]:
        """Split call→seen-running at the row's creation and its state changes (one wall clock)."""
        from broker.models import Desktop, DesktopEvent

        created = Desktop.objects.values_list("created_at", flat=True).get(pk=desktop_id).timestamp()
        at = {
            to_state: created_at.timestamp()
            for to_state, created_at in DesktopEvent.objects.filter(desktop_id=desktop_id)
            .exclude(to_state="").values_list("to_state", "created_at")
        }
        return {
            "call_to_row": created - wall0,  # entitlement check, host pick, INSERT
            "queue_wait": at["cloning"] - created,  # note, publish, worker pickup, queued→cloning
            "clone_define": at["starting"] - at["cloning"],
            "start": at["running"] - at["starting"],  # start, read ports, starting→running
            "poll_lag": wall_seen - at["running"],  # until the 20 ms poll sees it
        }

    def remove_all(self) -> None:
        """Through the broker's own deletion, so its rows end as deleted, not as ghosts."""
        from django.db import connections

        from broker.services.provisioning import delete_desktop

        def delete(desktop_id):
            try:
                delete_desktop(desktop_id=desktop_id)
            finally:
                connections.close_all()

        with self._lock:
            ids, self.desktop_ids = self.desktop_ids, []
        in_parallel(delete, ids)


# -- cleanup --------------------------------------------------------------------------------


def in_parallel(function, items) -> list:
    """Destroying a TCG domain takes libvirt 1-2 s; one at a time, teardown would dominate the run."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(items)), thread_name_prefix="cleanup") as executor:
        return list(executor.map(function, items))


def remove_bench_leftovers(conn, storage_pool: str, serial_log_dir: str, prefix: str = NAME_PREFIX) -> list[str]:
    """Destroy and undefine every `prefix`* domain, delete its volumes and serial logs."""
    import libvirt

    def destroy_and_undefine(domain):
        try:
            if domain.isActive():
                domain.destroy()
            domain.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        return domain.name()

    domains = [d for d in conn.listAllDomains(0) if d.name().startswith(prefix)]
    removed = in_parallel(destroy_and_undefine, domains)
    try:
        storage = conn.storagePoolLookupByName(storage_pool)
    except libvirt.libvirtError:
        storage = None
    if storage is not None:
        for volume in volumes_of(storage):
            if volume.name().startswith(prefix):
                volume.delete(0)
                removed.append(volume.name())
    if serial_log_dir:
        for log in Path(serial_log_dir).glob(f"{prefix}*.log"):
            log.unlink(missing_ok=True)
    return removed


def leftovers(conn, storage_pool: str, serial_log_dir: str = "", prefix: str = NAME_PREFIX) -> list[str]:
    """Domains, volumes and serial logs named `prefix`* that are still there."""
    import libvirt

    names = [d.name() for d in conn.listAllDomains(0) if d.name().startswith(prefix)]
    try:
        names += [v.name() for v in volumes_of(conn.storagePoolLookupByName(storage_pool))
                  if v.name().startswith(prefix)]
    except libvirt.libvirtError:
        pass
    if serial_log_dir:
        names += [log.name for log in Path(serial_log_dir).glob(f"{prefix}*.log")]
    return names


def volumes_of(storage) -> list:
    """The pool's volumes. Ours were all made through libvirt, so it knows them without a refresh,
    which fails while anyone else is creating a volume in the pool ("asynchronous jobs running")."""
    import libvirt

    try:
        storage.refresh(0)
    except libvirt.libvirtError:
        pass
    return storage.listAllVolumes(0)


# -- report ---------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _T_START:6.1f}s] {message}", file=sys.stderr, flush=True)


STEP_LABELS = {
    "call_to_row": "call→row",
    "queue_wait": "queue wait",
    "clone_define": "clone+define",
    "read_ports": "read ports",
    "poll_lag": "poll lag",
    "running_to_rfb": "running→RFB",
}


def format_steps(steps: dict[str, float]) -> str:
    return "  ".join(f"{STEP_LABELS.get(name, name)} {value:.3f}" for name, value in steps.items())


def mean_steps(timing: PathTimings) -> dict[str, float]:
    names = list(timing.samples[0].steps)
    return {name: statistics.fmean(s.steps[name] for s in timing.samples) for name in names}


def bookkeeping_s(broker_steps: dict[str, float]) -> float:
    """The broker's own share: everything before the worker starts cloning and after it is done.

    It depends far less than the libvirt steps on how busy the cores are with booting guests."""
    return broker_steps["call_to_row"] + broker_steps["queue_wait"] + broker_steps["poll_lag"]


def p50(values) -> float:
    return statistics.median(values)


def report(args, timings: dict[str, PathTimings], schedule_description: str, fixture: Fixture) -> str:
    lines = [
        f"Launch benchmark: {args.desktops} desktops per path, concurrency {args.concurrency}, "
        f"host {fixture.host.libvirt_uri} (domain type {fixture.host.domain_type}), "
        f"{fixture.pool.vcpus} vCPU / {fixture.pool.memory_mib} MiB per guest, linked qcow2 clones of "
        f"{Path(args.image).name}",
        f"Schedule: {schedule_description}",
        "running = domain running and its VNC port read; ready = the VNC port answers b\"RFB\"; "
        "total = first launch call to last desktop ready (summed over rounds).",
        f"Host: {os.cpu_count()} CPUs, load average {fixture.load_at_start} at start, "
        f"{fixture.other_domains} other running domain(s) not the bench's.",
        "",
        f"{'path':<8}{'N':>4}{'conc':>6}{'total s':>10}{'running p50':>13}{'running max':>13}"
        f"{'ready p50':>11}{'ready max':>11}",
    ]
    for path in ("direct", "broker"):
        timing = timings[path]
        running = [s.to_running_s for s in timing.samples]
        ready = [s.to_ready_s for s in timing.samples]
        lines.append(f"{path:<8}{len(timing.samples):>4}{args.concurrency:>6}{timing.total_s:>10.2f}"
                     f"{p50(running):>13.3f}{max(running):>13.3f}{p50(ready):>11.3f}{max(ready):>11.3f}")
    lines.append("")
    for path, caption in (("broker", "broker, mean s per step:"), ("direct", "direct, mean s per step:")):
        lines.append(f"{caption:<26}{format_steps(mean_steps(timings[path]))}")
    broker_steps, direct_steps = mean_steps(timings["broker"]), mean_steps(timings["direct"])
    lines.append(
        f"broker time outside libvirt calls (call→row + queue wait + poll lag): {bookkeeping_s(broker_steps):.3f} s"
        f" mean; its clone+define vs direct clone + define: "
        f"{broker_steps['clone_define'] - direct_steps['clone'] - direct_steps['define']:+.3f} s"
    )
    if args.per_desktop:
        lines.append("")
        for path in ("direct", "broker"):
            for sample in timings[path].samples:
                lines.append(f"  {sample.name:<28} running {sample.to_running_s:6.3f}  "
                             f"ready {sample.to_ready_s:6.3f}  | {format_steps(sample.steps)}")
    return "\n".join(lines)


def summary_json(args, timings: dict[str, PathTimings]) -> dict:
    broker, direct = timings["broker"], timings["direct"]
    broker_p50 = p50([s.to_running_s for s in broker.samples])
    direct_p50 = p50([s.to_running_s for s in direct.samples])

    def rounded(steps):
        return {name: round(value, 4) for name, value in steps.items()}

    return {
        "desktops": args.desktops,
        "concurrency": args.concurrency,
        "schedule": args.schedule,
        "broker_p50_s": round(broker_p50, 4),
        "direct_p50_s": round(direct_p50, 4),
        "ratio": round(broker_p50 / direct_p50, 3),
        "broker_total_s": round(broker.total_s, 3),
        "direct_total_s": round(direct.total_s, 3),
        "broker_max_s": round(max(s.to_running_s for s in broker.samples), 4),
        "direct_max_s": round(max(s.to_running_s for s in direct.samples), 4),
        "broker_ready_p50_s": round(p50([s.to_ready_s for s in broker.samples]), 4),
        "direct_ready_p50_s": round(p50([s.to_ready_s for s in direct.samples]), 4),
        "broker_bookkeeping_mean_s": round(bookkeeping_s(mean_steps(broker)), 4),
        "broker_steps_mean_s": rounded(mean_steps(broker)),
        "direct_steps_mean_s": rounded(mean_steps(direct)),
    }


# -- main -----------------------------------------------------------------------------------


def run(args, var_dir: Path, state: dict) -> tuple[str, dict]:
    """Everything that creates something records it in `state`, for main()'s cleanup."""
    load_at_start = os.getloadavg()  # before our own setup adds to it
    configure_environment(args, var_dir)
    import django

    django.setup()
    import libvirt
    from django.conf import settings

    from broker.services.provisioning import prepare_host_storage

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed too
    try:
        conn = libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        raise BenchAborted(f"cannot connect to {LIBVIRT_URI}: {exc.get_error_message()}") from exc
    state["conn"] = conn
    state["storage_pool"] = settings.VDI_STORAGE_POOL
    state["serial_log_dir"] = settings.VDI_GUEST_LOG_DIR
    stale = remove_bench_leftovers(conn, settings.VDI_STORAGE_POOL, settings.VDI_GUEST_LOG_DIR)
    if stale:
        progress(f"removed leftovers of an earlier run: {stale}")

    progress("migrating a fresh database and creating host, image, pool and users")
    migrate_empty_database(args)
    state["rows_in_given_database"] = bool(args.database_url)
    fixture = create_fixture(args)
    prepare_host_storage(fixture.host)
    # Context for the figures: TCG guests of anyone else compete for the same cores.
    fixture.load_at_start = " / ".join(f"{x:.2f}" for x in load_at_start)
    fixture.other_domains = sum(1 for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                                if not d.name().startswith(NAME_PREFIX))

    progress(f"starting a Celery worker (concurrency {args.concurrency}) on {CELERY_BROKER_URL}")
    purge_queue()
    state["worker"] = start_worker(args.concurrency, var_dir / "worker.log")

    direct = DirectLauncher(conn, fixture, args.image, args.timeout)
    broker = BrokerLauncher(fixture, args.timeout)
    launchers = {"direct": direct, "broker": broker}
    jobs = {"direct": [None] * args.desktops, "broker": list(fixture.users)}  # one fresh user per launch

    # Untimed: pulls the golden image, qemu and firmware into the page cache and lets the worker
    # import and connect, so neither path's first timed launch pays for being first.
    progress("warm-up: one direct and one broker desktop, untimed")
    direct.launch()
    broker.launch(fixture.warmup_user)
    direct.remove_all()
    broker.remove_all()

    samples: dict[str, list[Sample]] = {"direct": [], "broker": []}
    totals = {"direct": 0.0, "broker": 0.0}
    rounds = schedule_rounds(args.schedule, args.desktops, args.concurrency)
    for number, (path, size) in enumerate(rounds, 1):
        progress(f"round {number}/{len(rounds)}: {size} {path} desktop(s), {args.concurrency} at a time")
        batch, jobs[path] = jobs[path][:size], jobs[path][size:]
        result = launch_batch(path, launchers[path].launch, batch, args.concurrency)
        samples[path] += result.samples
        totals[path] += result.total_s
        launchers[path].remove_all()
    timings = {path: PathTimings(path=path, samples=samples[path], total_s=totals[path]) for path in samples}
    return report(args, timings, schedule_text(args), fixture), summary_json(args, timings)


def schedule_rounds(schedule: str, desktops: int, concurrency: int) -> list[tuple[str, int]]:
    """(path, desktops) per round, the host cleared after each.

    alternate: rounds of `concurrency` desktops as direct broker broker direct direct ..., so the
    load other users put on this shared host, as it drifts, falls on both paths alike.
    direct-first / broker-first: one round of all desktops per path; the k-th launch shares the
    cores with the k-1 guests before it booting, as when users arrive one after another."""
    if schedule != "alternate":
        first, second = ("direct", "broker") if schedule == "direct-first" else ("broker", "direct")
        return [(first, desktops), (second, desktops)]
    sizes = [concurrency] * (desktops // concurrency) + ([desktops % concurrency] if desktops % concurrency else [])
    rounds = []
    for index, size in enumerate(sizes):
        pair = ("direct", "broker") if index % 2 == 0 else ("broker", "direct")
        rounds += [(path, size) for path in pair]
    return rounds


def schedule_text(args) -> str:
    warmup = "untimed warm-up (1 direct + 1 broker desktop, removed), then "
    if args.schedule == "alternate":
        return (warmup + f"alternating rounds of up to {args.concurrency} desktops (direct, broker, broker, "
                "direct, ...); each round's guests are removed before the next, total = sum of the rounds.")
    first, second = args.schedule.split("-")[0], "broker" if args.schedule == "direct-first" else "direct"
    return (warmup + f"all {args.desktops} {first} desktops (guests kept until all are ready), removed, "
            f"then all {args.desktops} {second} desktops.")


def report_failure(var_dir: Path) -> None:
    """What the broker's rows and worker say, before the temporary directory goes away."""
    if "django" in sys.modules:
        try:
            from broker.models import Desktop

            for desktop in Desktop.objects.exclude(state="deleted").order_by("pk"):
                last = desktop.events.order_by("-created_at", "-id").first()
                progress(f"  {desktop.name}: {desktop.state} since {desktop.state_changed_at:%H:%M:%S.%f}; "
                         f"last event: {last}")
        except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the original error
            progress(f"  (could not read the desktops: {exc!r})")
    progress(f"worker log, last lines:\n{tail(var_dir / 'worker.log', 60)}")


def clean_up(state: dict, var_dir: Path, *, prefix: str = NAME_PREFIX, delete_rows=delete_fixture_rows,
             after_worker=None) -> list[str]:
    """Undo whatever a bench's `run` got to; every step is tried even if an earlier one fails.
    Shared with bench/provisioning.py (its own prefix, rows and queue purge).

    Returns what is still there (or ["?"] when a step failed), for the exit status."""
    left: list[str] = []

    def attempt(what, step):
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next step
            progress(f"cleanup: {what} failed: {exc!r}")
            left.append("?")

    if "worker" in state:  # first, so no task recreates a domain behind the sweep
        attempt("stopping the worker", lambda: stop_worker(state["worker"]))
        if after_worker is not None:
            attempt("purging our queue", after_worker)
        progress("worker stopped")
    conn = state.get("conn")
    if conn is not None:
        pool, logs = state["storage_pool"], state["serial_log_dir"]
        attempt("removing domains, volumes and logs", lambda: remove_bench_leftovers(conn, pool, logs, prefix=prefix))
        left += attempt("listing leftovers", lambda: leftovers(conn, pool, logs, prefix=prefix)) or []
        attempt("closing libvirt", conn.close)
    if state.get("rows_in_given_database"):
        attempt("deleting the bench's rows", delete_rows)
    shutil.rmtree(var_dir, ignore_errors=True)
    if left:
        progress(f"cleanup incomplete: {left}")
    return left


def run_bench(run, *, args, temp_prefix: str, clean_up=clean_up, report_failure=report_failure,
              var_dir_mode: int | None = None) -> int:
    """A bench's main: run it, clean up whatever happened (also on Ctrl+C or SIGTERM), then
    print the table and the JSON line. Every bench's main is this one: `run(args, var_dir,
    state)` returns (table, summary) and records in `state` what `clean_up(state, var_dir)` must
    undo; `report_failure(var_dir)` (or None) tells what went wrong before the cleanup."""

    def terminate(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    var_dir = Path(tempfile.mkdtemp(prefix=temp_prefix))
    if var_dir_mode is not None:
        os.chmod(var_dir, var_dir_mode)
    state: dict = {}
    result = None
    try:
        result = run(args, var_dir, state)
    except BenchAborted as exc:
        progress(f"aborted: {exc}")
        if report_failure:
            report_failure(var_dir)
    except KeyboardInterrupt:
        progress("interrupted")
    except Exception:
        if report_failure:
            report_failure(var_dir)
        raise  # with its traceback, after the cleanup below
    finally:
        # A second Ctrl+C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        STOP.set()
        progress("cleaning up")
        left = clean_up(state, var_dir)
    if result is None or left:
        return 1
    table, summary = result
    print(table)
    print(json.dumps(summary))
    return 0


def main() -> int:
    return run_bench(run, args=parse_args(), temp_prefix=NAME_PREFIX)


if __name__ == "__main__":
    sys.exit(main())
