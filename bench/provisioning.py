"""Provisioning benchmark: a pool from 0 to N ready desktops through the broker, and by hand.

    .venv/bin/python bench/provisioning.py [--desktops N] [--concurrency C] [--rounds R]

Both paths build N identical guests (linked qcow2 clone of the golden image, the broker's own
domain XML, the pool's vCPUs and memory) on this machine's libvirtd, at most C at a time:

  broker  an admin raises an empty floating pool's min_spares from 0 to N; the bench then calls
          reconcile_pool() every --reconcile-interval seconds (0.2 s; the beat's default is 30 s)
          and a real Celery worker (prefork, --concurrency C) clones, defines and starts what the
          passes queue. The host's max_parallel_provisioning is C, so each pass only tops the
          host up to C desktops in flight (queued, cloning or starting).
  direct  C threads: createXML (a volume backed by the golden image), defineXML, create(),
          XMLDesc for the VNC port. A thread takes the next desktop as soon as its guest runs,
          the point at which the broker's in-flight count lets go of a desktop too.

"ready" is the domain running and its VNC port answering b"RFB", checked the same way for both
(bench.launch.wait_for_rfb, outside the C slots). A path's total runs from its first call to its
last desktop ready. Between paths every guest is removed; with --rounds R the paths take turns
going first (direct, broker | broker, direct | ...).

Isolation as in bench/launch.py, with names of its own so the two never meet: a temporary
VDI_VAR_DIR and SQLite database (or an empty database given with --database-url), Redis
database 14 with the Celery queue vdibench-prov, and the name prefix vdibench-prov- for every
domain, volume and serial log; all of them are removed at the end, also on Ctrl+C or SIGTERM.
The table goes to stdout, its last line is one JSON object; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is sys.path[0] as a script

from bench import launch  # noqa: E402
from bench.launch import (  # noqa: E402
    LIBVIRT_URI,
    BenchAborted,
    DirectLauncher,
    Fixture,
    in_parallel,
    migrate_empty_database,
    p50,
    progress,
    raise_if_stopped,
    remove_bench_leftovers,
    start_worker,
    wait_for_rfb,
)

NAME_PREFIX = "vdibench-prov-"
QUEUE = "vdibench-prov"  # Celery queue of our own on launch.py's Redis database
POOL_NAME = "broker"  # the middle of the broker's domain names: vdibench-prov-broker-0001
IMAGE_NAME = "bench-prov-linux"
HOST_NAME = "local"
WATCH_POLL_S = launch.POLL_S  # how often the bench looks for desktops the worker has started
SETTLE_S = 2.0  # after removing guests, before the next path: let the old qemu processes go


# -- setup ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--desktops", "-n", type=int, default=20, help="desktops per path (default 20)")
    parser.add_argument("--concurrency", "-c", type=int, default=4,
                        help="the host's max_parallel_provisioning, the Celery worker's processes and the "
                             "direct path's threads (default 4)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of both paths, the first path alternating (default 1: each round boots "
                             "2N TCG guests)")
    parser.add_argument("--broker-first", action="store_true", help="round 1 runs the broker first")
    parser.add_argument("--reconcile-interval", type=float, default=0.2,
                        help="seconds between the bench's reconcile_pool() passes (default 0.2)")
    parser.add_argument("--database-url",
                        help="an EMPTY database to use instead of a temporary SQLite file; the rows the "
                             "bench creates are deleted at the end, the tables stay")
    parser.add_argument("--image", default=launch.DEFAULT_IMAGE, help=f"golden image (default {launch.DEFAULT_IMAGE})")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one path may take (default 300)")
    parser.add_argument("--per-desktop", action="store_true", help="also print every desktop's times")
    args = parser.parse_args()
    if args.desktops < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--desktops, --concurrency and --rounds must be at least 1")
    if args.reconcile_interval <= 0:
        parser.error("--reconcile-interval must be positive")
    return args


def configure_environment(args, var_dir: Path) -> None:
    """Point settings at the bench's own state; must run before Django is imported."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VDI_VAR_DIR": str(var_dir),
        "DATABASE_URL": args.database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}",
        "VDI_NAME_PREFIX": NAME_PREFIX,
        "CELERY_BROKER_URL": launch.CELERY_BROKER_URL,
        # The worker consumes this queue only, and our tasks go nowhere else: neither
        # bench/launch.py's worker nor the test suite's can take them, nor we theirs.
        "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
        "CHANNEL_LAYER_PREFIX": QUEUE,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "VDI_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })


def create_fixture(args) -> Fixture:
    from broker.hypervisor import HypervisorError
    from broker.models import GoldenImage, Host, Pool
    from broker.services.images import publish_image_version

    # cpus and memory_mib stay unmeasured (no host check), so pick_host places every desktop here;
    # measured, 2 CPUs x vcpu_overcommit 2.5 would cap this host at 5 desktops.
    host = Host.objects.create(name=HOST_NAME, libvirt_uri=LIBVIRT_URI, domain_type="qemu",
                               max_parallel_provisioning=args.concurrency)
    image = GoldenImage.objects.create(name=IMAGE_NAME, display_name="Provisioning bench Linux")
    try:
        # Before the pool exists, so publishing queues no reconcile of it.
        publish_image_version(image=image, path=args.image, host=host, notes="provisioning benchmark")
    except HypervisorError as exc:
        raise BenchAborted(f"{exc} (build it with scripts/build-golden-image.sh {args.image})") from exc
    # Empty until a run raises min_spares: nothing is built before the clock starts.
    pool = Pool.objects.create(name=POOL_NAME, display_name="Provisioning benchmark", image=image,
                               kind=Pool.Kind.FLOATING, min_spares=0, max_desktops=args.desktops,
                               data_disk_gib=0, spares_powered_on=True)
    return Fixture(host=host, pool=pool, users=[], warmup_user=None)


def delete_fixture_rows() -> None:
    """Rows in a database the caller gave us (a temporary SQLite file just goes away)."""
    from broker.models import Desktop, GoldenImage, Host, Pool

    Desktop.objects.filter(pool__name=POOL_NAME, name__startswith=NAME_PREFIX).delete()  # events cascade
    Pool.objects.filter(name=POOL_NAME).delete()
    GoldenImage.objects.filter(name=IMAGE_NAME).delete()  # versions cascade
    Host.objects.filter(name=HOST_NAME, libvirt_uri=LIBVIRT_URI).delete()


def purge_our_queue() -> None:
    """Our queue only, and only our messages in kombu's "unacked" hash, which a worker killed
    mid-task leaves behind (bench/launch.py's purge would clear everyone's on database 14)."""
    import redis

    subprocess.run(launch.celery("purge", "-f", "-Q", QUEUE), cwd=launch.ROOT, env=os.environ, check=True,
                   capture_output=True)
    client = redis.Redis.from_url(launch.CELERY_BROKER_URL)
    for tag, raw in client.hgetall("unacked").items():
        try:
            _message, exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if QUEUE in (exchange, routing_key):
            client.pipeline().hdel("unacked", tag).zrem("unacked_index", tag).execute()


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Desk:
    """One desktop of a run; every time in seconds since the run's clock started."""

    name: str
    began: float  # direct: the clone call; broker: the row inserted by reconcile_pool
    running: float  # direct: the VNC port read; broker: the row's transition to running
    ready: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    path: str
    round: int
    desks: list[Desk]
    total_s: float
    passes: list[tuple[float, float, int]] = field(default_factory=list)  # (at, seconds, created)

    def per_desktop(self) -> list[float]:
        return [d.ready - d.began for d in self.desks]


def ready_after(port: int, deadline: float) -> float:
    wait_for_rfb(port, deadline)
    return time.perf_counter()


# -- direct path ----------------------------------------------------------------------------


class DirectProvisioner(DirectLauncher):
    """bench.launch's reference calls, C in flight, each slot freed once its guest runs.

    One libvirt connection per slot, as each Celery worker process has its own: libvirtd serves
    at most max_client_requests (default 5) calls of one connection at a time, so C > 5 threads
    on the shared connection would queue their clones behind the others' create() calls."""

    def run(self, *, count: int, concurrency: int, round_number: int) -> Run:
        import libvirt

        from broker.hypervisor.xml import domain_xml, read_graphics_ports, volume_xml

        names = [f"{NAME_PREFIX}direct-{uuid.uuid4().hex[:10]}" for _ in range(count)]
        specs = {name: self.guest_spec(name) for name in names}  # pure Python, before the clock
        connections: queue.SimpleQueue = queue.SimpleQueue()
        opened = [libvirt.open(LIBVIRT_URI) for _ in range(min(concurrency, count))]
        for conn in opened:
            connections.put((conn, conn.storagePoolLookupByName(self.storage.name())))
        slots = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="direct")
        waiters = ThreadPoolExecutor(max_workers=count, thread_name_prefix="direct-rfb")
        t0 = time.perf_counter()
        deadline = t0 + self.timeout_s

        def provision(name: str):
            raise_if_stopped()
            conn, storage = connections.get()  # one per slot thread: never waits
            try:
                return provision_on(conn, storage, name)
            finally:
                connections.put((conn, storage))

        def provision_on(conn, storage, name: str):
            spec = specs[name]
            began = time.perf_counter()
            volume = storage.createXML(volume_xml(name=f"{name}.qcow2", capacity_bytes=self.golden_capacity,
                                                  backing_path=self.golden_path), 0)
            cloned = time.perf_counter()
            if volume.path() != spec.system_disk_path:
                raise BenchAborted(f"storage pool {storage.name()} is not at {self.host.storage_path}")
            domain = conn.defineXML(domain_xml(spec))
            defined = time.perf_counter()
            domain.create()
            started = time.perf_counter()
            port = read_graphics_ports(domain.XMLDesc(0)).vnc
            running = time.perf_counter()
            if port is None:
                raise BenchAborted(f"{name} runs but shows no VNC port")
            desk = Desk(name=name, began=began - t0, running=running - t0, steps={
                "clone": cloned - began, "define": defined - cloned, "start": started - defined,
                "read_ports": running - started})
            return desk, waiters.submit(ready_after, port, deadline)

        try:
            futures = [slots.submit(provision, name) for name in names]
            desks = []
            for future in futures:
                desk, ready = future.result()
                desk.ready = ready.result() - t0
                desk.steps["running_to_rfb"] = desk.ready - desk.running
                desks.append(desk)
                progress(f"  direct {len(desks)}/{count} ready at {desk.ready:.2f} s")
        except BaseException:
            launch.STOP.set()
            raise
        finally:
            slots.shutdown(wait=True, cancel_futures=True)
            waiters.shutdown(wait=True, cancel_futures=True)
            for conn in opened:
                conn.close()
        return Run(path="direct", round=round_number, desks=desks, total_s=max(d.ready for d in desks))

    def remove_all(self) -> None:
        remove_bench_leftovers(self.conn, self.storage.name(), self.host.serial_log_dir,
                               prefix=f"{NAME_PREFIX}direct-")


# -- broker path ----------------------------------------------------------------------------


class BrokerProvisioner:
    """The admin's change and the beat's passes; the Desktop rows watched for running ones."""

    def __init__(self, fixture: Fixture, *, interval_s: float, timeout_s: float):
        self.pool = fixture.pool
        self.interval_s = interval_s
        self.timeout_s = timeout_s

    def run(self, *, count: int, round_number: int) -> Run:
        from django.db import connections

        from broker.models import Pool
        from broker.services.pools import reconcile_pool

        # The pool is empty; an admin asks for `count` ready spares.
        Pool.objects.filter(pk=self.pool.pk).update(min_spares=count)
        seen: dict[int, tuple[float, object]] = {}  # desktop id -> (seen running at, its RFB future)
        waiters = ThreadPoolExecutor(max_workers=count, thread_name_prefix="broker-rfb")
        failure: list[BaseException] = []
        passes: list[tuple[float, float, int]] = []
        wall0, t0 = time.time(), time.perf_counter()
        deadline = t0 + self.timeout_s
        watcher = threading.Thread(target=self._watch, name="broker-watch",
                                   args=(count, seen, waiters, deadline, failure), daemon=True)
        watcher.start()
        try:
            next_pass = t0
            while watcher.is_alive():
                raise_if_stopped()
                if time.perf_counter() > deadline:
                    raise BenchAborted(f"the pool had {len(seen)}/{count} desktops running after {self.timeout_s} s")
                started = time.perf_counter()
                created = reconcile_pool(pool_id=self.pool.pk)["created"]
                passes.append((started - t0, time.perf_counter() - started, created))
                # Fixed rate, like the beat; a pass that overruns is followed at once by the next.
                next_pass += self.interval_s
                watcher.join(timeout=max(0.0, next_pass - time.perf_counter()))
            if failure:
                raise failure[0]
            ready_at = {pk: future.result() - t0 for pk, (_seen, future) in seen.items()}
        except BaseException:
            launch.STOP.set()
            raise
        finally:
            watcher.join()
            waiters.shutdown(wait=True, cancel_futures=True)
            connections.close_all()
        desks = self._desks(seen, ready_at, wall0, t0)
        return Run(path="broker", round=round_number, desks=desks, total_s=max(d.ready for d in desks),
                   passes=passes)

    def _watch(self, count, seen, waiters, deadline, failure) -> None:
        """Every WATCH_POLL_S: desktops newly running get an RFB wait; a failed one stops the run."""
        from django.db import connections

        from broker.models import Desktop, DesktopState

        try:
            while len(seen) < count:
                raise_if_stopped()
                rows = (Desktop.objects.filter(pool=self.pool, state__in=(DesktopState.RUNNING, DesktopState.FAILED))
                        .exclude(pk__in=list(seen)).values_list("pk", "name", "state", "vnc_port", "last_error"))
                for pk, name, state, port, error in rows:
                    if state == DesktopState.FAILED:
                        raise BenchAborted(f"{name} failed: {error}")
                    seen[pk] = (time.perf_counter(), waiters.submit(ready_after, port, deadline))
                    progress(f"  broker {len(seen)}/{count} running: {name}")
                if len(seen) < count:
                    if time.perf_counter() > deadline:
                        raise BenchAborted(f"{len(seen)}/{count} desktops running after the timeout")
                    time.sleep(WATCH_POLL_S)
            for _seen, future in seen.values():
                future.result()  # the run ends when the last console answers
        except BaseException as exc:  # noqa: BLE001 - handed to the reconcile loop, which raises it
            failure.append(exc)
            launch.STOP.set()
        finally:
            connections.close_all()

    def _desks(self, seen, ready_at, wall0: float, t0: float) -> list[Desk]:
        """Each desktop's steps from its row and DesktopEvent rows (wall clock, as launch.py).

        An event's time is taken as its transition begins, so a step holds the previous
        transition's commit and the worker's reload of the row as well as the libvirt calls."""
        from broker.models import Desktop, DesktopEvent

        since = {pk: created.timestamp() - wall0 for pk, created in
                 Desktop.objects.filter(pk__in=list(seen)).values_list("pk", "created_at")}
        names = dict(Desktop.objects.filter(pk__in=list(seen)).values_list("pk", "name"))
        at: dict[int, dict[str, float]] = {pk: {} for pk in seen}
        for pk, to_state, created in (DesktopEvent.objects.filter(desktop_id__in=list(seen)).exclude(to_state="")
                                      .values_list("desktop_id", "to_state", "created_at")):
            at[pk][to_state] = created.timestamp() - wall0
        desks = []
        for pk, (seen_at, _future) in seen.items():
            events, seen_s = at[pk], seen_at - t0
            desks.append(Desk(name=names[pk], began=since[pk], running=events["running"], ready=ready_at[pk], steps={
                "queue_wait": events["cloning"] - since[pk],  # note, commit, publish, worker pickup, load
                "clone_define": events["starting"] - events["cloning"],  # + storage pool and image lookups
                "start": events["running"] - events["starting"],  # start, read ports
                "poll_lag": seen_s - events["running"],
                "running_to_rfb": ready_at[pk] - seen_s,
            }))
        return sorted(desks, key=lambda d: d.began)

    def remove_all(self) -> None:
        """Through the broker's own deletion, so its rows end as deleted; min_spares back to 0 first."""
        from django.db import connections

        from broker.models import Desktop, Pool
        from broker.services.provisioning import delete_desktop

        Pool.objects.filter(pk=self.pool.pk).update(min_spares=0)

        def delete(desktop_id):
            try:
                delete_desktop(desktop_id=desktop_id)
            finally:
                connections.close_all()

        in_parallel(delete, list(Desktop.objects.filter(pool=self.pool).exclude(state="deleted")
                                 .values_list("pk", flat=True)))


# -- report ---------------------------------------------------------------------------------


STEP_LABELS = {**launch.STEP_LABELS, "clone": "clone", "define": "define", "start": "start"}


def format_steps(steps: dict[str, float]) -> str:
    return "  ".join(f"{STEP_LABELS.get(name, name)} {value:.3f}" for name, value in steps.items())


def mean_steps(runs: list[Run]) -> dict[str, float]:
    desks = [d for run in runs for d in run.desks]
    return {name: statistics.fmean(d.steps[name] for d in desks) for name in desks[0].steps}


def refill_lags(run: Run, concurrency: int) -> list[float]:
    """Broker: from a desktop reaching running (its slot free) to the next row created.

    reconcile_pool fills every free slot in one pass, so the k-th desktop to run frees the slot
    that the (C+k)-th desktop created takes. The direct path refills at once (a thread)."""
    running = sorted(d.running for d in run.desks)
    began = sorted(d.began for d in run.desks)
    return [began[concurrency + k] - running[k] for k in range(len(began) - concurrency)]


def mean_total(runs: list[Run]) -> float:
    return statistics.fmean(run.total_s for run in runs)


def slot_overhead(runs: dict[str, list[Run]], concurrency: int) -> tuple[float, float]:
    """(s, ratio): how much longer the broker holds a slot per desktop than the direct path,
    counting only what is not the guest's start, and the ratio that alone would give.

    The start step (qemu under TCG) swings by a second with the host's load; this does not,
    so it is the steadier reading of the broker's own cost on a shared machine."""
    broker, direct = mean_steps(runs["broker"]), mean_steps(runs["direct"])
    lags = [lag for run in runs["broker"] for lag in refill_lags(run, concurrency)]
    desks = sum(len(run.desks) for run in runs["broker"])
    overhead = (broker["queue_wait"] + (sum(lags) / desks)
                + broker["clone_define"] - direct["clone"] - direct["define"])
    direct_slot = direct["clone"] + direct["define"] + direct["start"] + direct["read_ports"]
    return overhead, 1 + overhead / direct_slot


@dataclass
class Context:
    database: str
    load_at_start: str
    load_at_end: str = ""
    other_domains: int = 0


def by_path(executed: list[Run]) -> dict[str, list[Run]]:
    return {path: [run for run in executed if run.path == path] for path in ("direct", "broker")}


def report(args, executed: list[Run], context: Context, fixture: Fixture) -> str:
    n, c, runs = args.desktops, args.concurrency, by_path(executed)
    broker_s, direct_s = mean_total(runs["broker"]), mean_total(runs["direct"])
    lags = [lag for run in runs["broker"] for lag in refill_lags(run, c)]
    passes = [p for run in runs["broker"] for p in run.passes]
    creating = [p for p in passes if p[2]]
    lines = [
        f"Provisioning benchmark: a pool from 0 to {n} ready desktops, {c} in flight at a time; host "
        f"{fixture.host.libvirt_uri} (domain type {fixture.host.domain_type}), {fixture.pool.vcpus} vCPU / "
        f"{fixture.pool.memory_mib} MiB per guest, linked qcow2 clones of {Path(args.image).name}; {context.database}.",
        f"broker: floating pool min_spares 0→{n} (max_desktops {n}, spares powered on), host "
        f"max_parallel_provisioning {c}, Celery worker prefork --concurrency {c}; the bench calls "
        f"reconcile_pool() every {args.reconcile_interval:g} s (the beat: every "
        f"{os.environ.get('VDI_RECONCILE_SECONDS', '30')} s).",
        f"direct: {c} threads createXML (backing store), defineXML, create(), XMLDesc; a thread takes the "
        "next desktop once its guest runs, where the broker's in-flight count lets go too.",
        "ready = running and the VNC port answers b\"RFB\"; total = first call to last desktop ready; per desktop "
        "= its first step (direct: the clone call; broker: the row the reconcile pass inserts) to ready.",
        f"Untimed warm-up of {min(c, n)} desktops per path first; guests removed between paths, then {SETTLE_S:g} s "
        f"settle. Host: {os.cpu_count()} CPUs, load average {context.load_at_start} at start, "
        f"{context.load_at_end} at end; {context.other_domains} other running domain(s) not the bench's.",
        "",
        f"{'round':<7}{'path':<8}{'N':>4}{'conc':>6}{'total s':>10}{'desktop/s':>11}{'first ready':>13}"
        f"{'per-desktop p50':>17}{'max':>8}",
    ]
    for run in executed:
        per = run.per_desktop()
        lines.append(f"{run.round:<7}{run.path:<8}{len(run.desks):>4}{c:>6}{run.total_s:>10.2f}"
                     f"{len(run.desks) / run.total_s:>11.2f}{min(d.ready for d in run.desks):>13.2f}"
                     f"{p50(per):>17.3f}{max(per):>8.3f}")
    if args.rounds > 1:
        for path in ("direct", "broker"):
            per = [x for run in runs[path] for x in run.per_desktop()]
            lines.append(f"{'mean':<7}{path:<8}{n:>4}{c:>6}{mean_total(runs[path]):>10.2f}"
                         f"{n / mean_total(runs[path]):>11.2f}{'':>13}{p50(per):>17.3f}{max(per):>8.3f}")
    lines += [
        "",
        f"{'broker, mean s per desktop:':<29}{format_steps(mean_steps(runs['broker']))}",
        f"{'direct, mean s per desktop:':<29}{format_steps(mean_steps(runs['direct']))}",
        (f"broker slot refill (a desktop running → the next row created by a pass): mean "
         f"{statistics.fmean(lags):.3f} s, max {max(lags):.3f} s over {len(lags)} refills")
        if lags else "broker slot refill: none (N ≤ C)",
        f"reconcile passes: {len(passes) / len(runs['broker']):.0f} per run, {len(creating) / len(runs['broker']):.0f} "
        f"of them created desktops; a pass took {statistics.fmean(p[1] for p in passes):.3f} s mean, "
        f"{max(p[1] for p in passes):.3f} s max",
        "broker slot overhead per desktop, the guest's start left out (queue wait + refill lag per desktop + "
        f"clone+define − direct clone − define): {slot_overhead(runs, c)[0]:+.3f} s, a ratio of "
        f"{slot_overhead(runs, c)[1]:.3f} on its own",
        f"ratio broker/direct (mean totals): {broker_s / direct_s:.3f} (target ≤ 1.25); broker {n} ready in "
        f"{broker_s:.2f} s (target < 20 s at N = 20), {broker_s / n:.2f} s per desktop",
    ]
    if args.per_desktop:
        lines.append("")
        for path in ("direct", "broker"):
            for run in runs[path]:
                for d in sorted(run.desks, key=lambda d: d.began):
                    lines.append(f"  r{run.round} {d.name:<34} began {d.began:6.2f}  running {d.running:6.2f}  "
                                 f"ready {d.ready:6.2f}  | {format_steps(d.steps)}")
    return "\n".join(lines)


def summary_json(args, executed: list[Run], context: Context) -> dict:
    runs = by_path(executed)
    broker_s, direct_s = mean_total(runs["broker"]), mean_total(runs["direct"])
    lags = [lag for run in runs["broker"] for lag in refill_lags(run, args.concurrency)]
    passes = [p for run in runs["broker"] for p in run.passes]

    def per(path):
        values = [x for run in runs[path] for x in run.per_desktop()]
        return {"p50": round(p50(values), 4), "max": round(max(values), 4)}

    def rounded(steps):
        return {name: round(value, 4) for name, value in steps.items()}

    return {
        "broker_s": round(broker_s, 3),
        "direct_s": round(direct_s, 3),
        "ratio": round(broker_s / direct_s, 3),
        "desktops": args.desktops,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "reconcile_interval_s": args.reconcile_interval,
        "database": context.database,
        "broker_totals_s": [round(run.total_s, 3) for run in runs["broker"]],
        "direct_totals_s": [round(run.total_s, 3) for run in runs["direct"]],
        "broker_per_desktop_s": per("broker"),
        "direct_per_desktop_s": per("direct"),
        "broker_steps_mean_s": rounded(mean_steps(runs["broker"])),
        "direct_steps_mean_s": rounded(mean_steps(runs["direct"])),
        "broker_refill_lag_s": {"mean": round(statistics.fmean(lags), 4), "max": round(max(lags), 4)} if lags else None,
        "reconcile_passes_per_run": round(len(passes) / len(runs["broker"]), 1),
        "reconcile_pass_mean_s": round(statistics.fmean(p[1] for p in passes), 4),
        "broker_slot_overhead_s": round(slot_overhead(runs, args.concurrency)[0], 4),
        "ratio_from_slot_overhead": round(slot_overhead(runs, args.concurrency)[1], 3),
        "load_average_start": context.load_at_start,
        "load_average_end": context.load_at_end,
        "other_running_domains": context.other_domains,
        "meets_ratio_target": broker_s / direct_s <= 1.25,
        "broker_under_20_s": broker_s < 20,
    }


# -- main -----------------------------------------------------------------------------------


def first_path(args, round_number: int) -> str:
    broker_first = args.broker_first != (round_number % 2 == 0)
    return "broker" if broker_first else "direct"


def run(args, var_dir: Path, state: dict) -> tuple[str, dict]:
    """Everything that creates something records it in `state`, for main()'s cleanup."""
    load_at_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())  # before our own setup adds to it
    configure_environment(args, var_dir)
    import django

    django.setup()
    import libvirt
    from django.conf import settings
    from django.db import connection

    from broker.services.provisioning import prepare_host_storage

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        raise BenchAborted(f"cannot connect to {LIBVIRT_URI}: {exc.get_error_message()}") from exc
    state.update(conn=conn, storage_pool=settings.VDI_STORAGE_POOL, serial_log_dir=settings.VDI_GUEST_LOG_DIR)
    stale = remove_bench_leftovers(conn, settings.VDI_STORAGE_POOL, settings.VDI_GUEST_LOG_DIR, prefix=NAME_PREFIX)
    if stale:
        progress(f"removed leftovers of an earlier run: {stale}")

    progress("migrating a fresh database and creating host, image and pool")
    migrate_empty_database(args)
    state["rows_in_given_database"] = bool(args.database_url)
    fixture = create_fixture(args)
    prepare_host_storage(fixture.host)
    database = connection.vendor + (" (transactions IMMEDIATE)" if connection.vendor == "sqlite" else "")
    others = [d for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
              if not d.name().startswith(NAME_PREFIX)]
    context = Context(database=database, load_at_start=load_at_start, other_domains=len(others))

    progress(f"starting a Celery worker (concurrency {args.concurrency}) on {launch.CELERY_BROKER_URL}, queue {QUEUE}")
    purge_our_queue()
    state["worker"] = start_worker(args.concurrency, var_dir / "worker.log")

    direct = DirectProvisioner(conn, fixture, args.image, args.timeout)
    broker = BrokerProvisioner(fixture, interval_s=args.reconcile_interval, timeout_s=args.timeout)
    paths = {
        "direct": lambda count, number: direct.run(count=count, concurrency=args.concurrency, round_number=number),
        "broker": lambda count, number: broker.run(count=count, round_number=number),
    }
    removers = {"direct": direct.remove_all, "broker": broker.remove_all}

    # Untimed: pulls image, qemu and firmware into the page cache and gives every worker process
    # its libvirt and database connection, so no timed run pays for being first.
    warmup = min(args.concurrency, args.desktops)
    progress(f"warm-up: {warmup} direct and {warmup} broker desktop(s), untimed")
    for path in ("direct", "broker"):
        paths[path](warmup, 0)
        removers[path]()

    executed: list[Run] = []
    for number in range(1, args.rounds + 1):
        first = first_path(args, number)
        for path in (first, "broker" if first == "direct" else "direct"):
            time.sleep(SETTLE_S)
            progress(f"round {number}/{args.rounds}: {path}, {args.desktops} desktops, {args.concurrency} at a time")
            result = paths[path](args.desktops, number)
            executed.append(result)
            progress(f"round {number}: {path} all {args.desktops} ready in {result.total_s:.2f} s; removing them")
            removers[path]()
    context.load_at_end = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return report(args, executed, context, fixture), summary_json(args, executed, context)


def clean_up(state: dict, var_dir: Path) -> list[str]:
    return launch.clean_up(state, var_dir, prefix=NAME_PREFIX, delete_rows=delete_fixture_rows,
                           after_worker=purge_our_queue)


def main() -> int:
    return launch.run_bench(run, args=parse_args(), temp_prefix=NAME_PREFIX, clean_up=clean_up)


if __name__ == "__main__":
    sys.exit(main())
