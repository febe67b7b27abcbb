"""The world bench/logon_storm.py runs in, all its own: a PostgreSQL database, a Redis database,
a slapd with the employees, the broker's rows, the desktops (cheap RFB endpoints on libvirt
test-driver hosts, or real TCG guests) and the production layout's processes.

Nothing here is timed; bench/logon_storm.py measures.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from bench.launch import BenchAborted

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVER_URL = "postgres://postgres@127.0.0.1:5432"
DATABASE = "vdi_storm_bench"
REDIS_URL = "redis://127.0.0.1:6379/13"  # this bench's own database number (launch.py: 14, tests: 15)
RUN = "vdistorm"  # Celery queue and channel-layer prefix
NAME_PREFIX = "vdistorm-"  # domains, volumes, serial logs
GROUP = "vdi-storm"
POOL = "storm"
WORKER_CONCURRENCY = 4  # make run's VDI_WORKERS default
DESKTOPS_PER_CHEAP_HOST = 100
GOLDEN_SIZE = 2**30


def password_of(index: int) -> str:
    return f"storm-Pw-{index:05d}"


def username_of(index: int) -> str:
    return f"storm{index:05d}"


# -- environment ---------------------------------------------------------------------------------


def configure_environment(args, var_dir: Path, slapd_uri: str) -> dict:
    """Settings for this process and the ones it starts; before Django is imported."""
    from tests.support.slapd import SERVICE_DN, SUFFIX

    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VDI_VAR_DIR": str(var_dir),
        "DATABASE_URL": f"{SERVER_URL}/{DATABASE}",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": RUN,
        "CHANNEL_LAYER_URL": REDIS_URL,
        "CHANNEL_LAYER_PREFIX": RUN,
        "VDI_AGENT_QUEUE_PREFIX": f"{RUN}.agent.",
        "VDI_NAME_PREFIX": NAME_PREFIX,
        "AUTH_LDAP_SERVER_URI": slapd_uri,
        "AUTH_LDAP_BIND_DN": SERVICE_DN,
        "AUTH_LDAP_BIND_PASSWORD": "svc-secret",
        "AUTH_LDAP_USER_SEARCH_BASE": f"ou=people,{SUFFIX}",
        "AUTH_LDAP_GROUP_SEARCH_BASE": f"ou=groups,{SUFFIX}",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    return env


# -- database, Redis, directory -------------------------------------------------------------------


def create_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def drop_database() -> None:
    import psycopg

    if "django" in sys.modules:
        from django.db import connections

        connections.close_all()
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def start_directory(workdir: Path, users: int):
    """slapd on loopback with `users` people, all members of GROUP (and a few more, spare)."""
    from tests.support.slapd import Slapd, group_of_names, person, user_dn

    people = "".join(person(username_of(i), password_of(i), given="Storm", surname=f"User {i}")
                     for i in range(users))
    ldif = people + group_of_names(GROUP, [user_dn(username_of(i)) for i in range(users)])
    workdir.mkdir(parents=True, exist_ok=True)
    directory = Slapd(workdir, size_limit=users + 100)
    directory.start(ldif)
    return directory


# -- the broker's rows ----------------------------------------------------------------------------


@dataclass
class World:
    backend: str
    pool: object
    users: int
    hosts: list = field(default_factory=list)
    rfb: "CheapRfbServers | None" = None
    processes: dict = field(default_factory=dict)  # name -> Popen
    slapd_pid: int = 0
    portal_workers: int = 1
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def migrate_and_sync_directory() -> float:
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    Group.objects.get_or_create(name=GROUP)
    t0 = time.perf_counter()
    call_command("ldap_sync", stdout=open(os.devnull, "w"))
    return time.perf_counter() - t0


def _node_xml(desktops: list[tuple[str, str, int]], *, storage_pool: str, storage_path: str, image_pool: str,
              image_path: str) -> str:
    domains = "".join(
        "<domain type='test'>"
        f"<name>{escape(name)}</name><uuid>{uid}</uuid><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
        f"<os><type>hvm</type></os><devices><graphics type='vnc' port='{port}' autoport='no' listen='127.0.0.1'/>"
        "</devices></domain>" for name, uid, port in desktops)
    volumes = "".join(_volume(f"{name}.qcow2", storage_path) for name, _, _ in desktops)
    return (f"<node><cpu><mhz>2400</mhz><model>x86_64</model><active>192</active><nodes>2</nodes><sockets>1</sockets>"
            f"<cores>48</cores><threads>2</threads></cpu><memory>{1536 * 1024 * 1024}</memory>{domains}"
            f"<pool type='dir'><name>{storage_pool}</name><target><path>{storage_path}</path></target>{volumes}</pool>"
            f"<pool type='dir'><name>{image_pool}</name><target><path>{image_path}</path></target>"
            f"{_volume('storm-golden.qcow2', image_path)}</pool></node>")


def _volume(name: str, directory: str) -> str:
    return (f"<volume type='file'><name>{escape(name)}</name><capacity>{GOLDEN_SIZE}</capacity>"
            f"<allocation>{2**24}</allocation><target><path>{directory.rstrip('/')}/{escape(name)}</path>"
            "</target></volume>")


def build_cheap_world(args, var_dir: Path, rfb: "CheapRfbServers") -> World:
    """A floating pool of N spares (+1 for the query count), already running, on libvirt
    test-driver hosts of DESKTOPS_PER_CHEAP_HOST desktops each, every desktop's VNC console a
    port of `rfb`. Rows are bulk-created."""
    from django.conf import settings
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from broker.models import Desktop, DesktopEvent, Entitlement, GoldenImage, Host, Pool
    from broker.services.hosts import check_host
    from broker.services.images import publish_image_version

    count = args.users + 1
    names = [f"{NAME_PREFIX}{POOL}-{n:05d}" for n in range(1, count + 1)]
    uuids = [str(uuid.uuid4()) for _ in names]
    ports = rfb.ports
    node_dir = var_dir / "hosts"
    node_dir.mkdir()
    hosts = []
    for h, start in enumerate(range(0, count, DESKTOPS_PER_CHEAP_HOST)):
        chunk = list(zip(names, uuids, ports))[start:start + DESKTOPS_PER_CHEAP_HOST]
        path = node_dir / f"h{h + 1:02d}.xml"
        path.write_text(_node_xml(chunk, storage_pool=settings.VDI_STORAGE_POOL, storage_path=settings.VDI_STORAGE_PATH,
                                  image_pool=settings.VDI_IMAGE_POOL, image_path=settings.VDI_IMAGE_PATH))
        hosts.append(Host(name=f"storm-h{h + 1:02d}", libvirt_uri=f"test://{path}", domain_type="kvm",
                          console_address="127.0.0.1"))
    hosts = Host.objects.bulk_create(hosts)
    for host in hosts:
        check_host(host_id=host.pk)
    image = GoldenImage.objects.create(name="storm-linux", display_name="Storm Linux")
    version = publish_image_version(image=image, path=f"{settings.VDI_IMAGE_PATH}/storm-golden.qcow2", host=hosts[0],
                                    notes="logon storm benchmark")
    # Spares wanted = maximum: the pool manager neither deletes the pre-made spares as surplus
    # nor clones new ones while the storm takes them (no room above the maximum).
    pool = Pool.objects.create(name=POOL, display_name="Storm desktop", kind=Pool.Kind.FLOATING, image=image,
                               min_spares=count, max_desktops=count, desktop_counter=count)
    Entitlement.objects.create(pool=pool, group=Group.objects.get(name=GROUP))
    now = timezone.now()
    desktops = Desktop.objects.bulk_create([
        Desktop(pool=pool, host=hosts[i // DESKTOPS_PER_CHEAP_HOST], image_version=version, name=name, uuid=uid,
                state="running", state_changed_at=now, vnc_port=port, provisioning_attempts=1)
        for i, (name, uid, port) in enumerate(zip(names, uuids, ports))], batch_size=2000)
    DesktopEvent.objects.bulk_create([DesktopEvent(desktop=d, from_state="starting", to_state="running",
                                                   message="storm bench: made ready") for d in desktops])
    return World(backend="cheap", pool=pool, users=args.users, hosts=hosts, rfb=rfb)


def build_tcg_world(args, *, spares: int, max_desktops: int) -> World:
    """A floating pool on this machine's libvirtd: `spares` TCG guests kept ready by the pool
    manager (Celery beat), made before the clock starts."""
    from django.contrib.auth.models import Group

    from bench.launch import DEFAULT_IMAGE, LIBVIRT_URI
    from broker.hypervisor import HypervisorError
    from broker.models import Entitlement, GoldenImage, Host, Pool
    from broker.services.hosts import check_host
    from broker.services.images import publish_image_version
    from broker.services.provisioning import prepare_host_storage

    # Every spare on this one machine: vCPUs overcommitted far past a real host's 2-3 per core
    # (the guests idle at a shell once booted; the storm measures the broker, not the guests).
    host = Host.objects.create(name="storm-local", libvirt_uri=LIBVIRT_URI, domain_type="qemu",
                               console_address="127.0.0.1", vcpu_overcommit=max(2.5, max_desktops + 1.0))
    prepare_host_storage(host)
    check_host(host_id=host.pk)
    image = GoldenImage.objects.create(name="storm-linux", display_name="Storm Linux")
    try:
        publish_image_version(image=image, path=args.image or DEFAULT_IMAGE, host=host, notes="logon storm benchmark")
    except HypervisorError as exc:
        raise BenchAborted(f"{exc} (build it with scripts/build-golden-image.sh)") from exc
    pool = Pool.objects.create(name=POOL, display_name="Storm desktop", kind=Pool.Kind.FLOATING, image=image,
                               min_spares=spares, max_desktops=max_desktops, memory_mib=128, data_disk_gib=0)
    Entitlement.objects.create(pool=pool, group=Group.objects.get(name=GROUP))
    return World(backend="tcg", pool=pool, users=args.users, hosts=[host])


def wait_for_spares(world: World, count: int, timeout_s: float) -> float:
    """Until `count` spares of the pool run (the worker clones and starts them)."""
    from broker.models import Desktop

    from broker.services.pools import reconcile_pool

    t0 = time.monotonic()
    reconcile_pool(pool_id=world.pool.pk)  # now, rather than at the next beat
    while True:
        ready = Desktop.objects.filter(pool=world.pool, user__isnull=True, state="running").count()
        if ready >= count:
            return time.monotonic() - t0
        failed = Desktop.objects.filter(pool=world.pool, state="failed").first()
        if failed is not None:
            raise BenchAborted(f"spare {failed.name} failed: {failed.last_error}")
        if time.monotonic() - t0 > timeout_s:
            raise BenchAborted(f"only {ready} of {count} spares running after {timeout_s:.0f} s")
        time.sleep(0.5)


# -- cheap RFB endpoints --------------------------------------------------------------------------


class CheapRfbServers:
    """One loopback port per desktop, answering as QEMU's VNC server does: RFB 3.8, "VNC
    authentication" (any answer is accepted: the one-time password was set in the portal's
    own test-driver copy, which cannot hold one), ServerInit of a 1024x768 screen; input read
    and dropped. Runs on the bench's event loop."""

    def __init__(self, count: int):
        self.count = count
        self.servers = []
        self.ports: list[int] = []
        self.open = 0
        self.server_inits = 0

    async def start(self):
        for _ in range(self.count):
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=64)
            self.servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def stop(self):
        for server in self.servers:
            server.close()

    async def _serve(self, reader, writer):
        self.open += 1
        try:
            writer.write(b"RFB 003.008\n")
            await reader.readexactly(12)
            writer.write(b"\x01\x02")  # one type: VNC authentication
            await reader.readexactly(1)
            writer.write(os.urandom(16))
            await reader.readexactly(16)
            writer.write(b"\0\0\0\0")
            await reader.readexactly(1)  # ClientInit
            name = b"storm"
            writer.write(struct.pack(">HHBBBBHHHBBB3xI", 1024, 768, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0, len(name))
                         + name)
            self.server_inits += 1
            while await reader.read(65536):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_processes(world: World, var_dir: Path) -> None:
    """The production layout (docs/production.md): the portal (uvicorn, console gateway included:
    `python -m config.serve config.asgi:application`, with --workers N where N > 1) and one
    Celery worker with beat (prefork, concurrency VDI_WORKERS = 4, as scripts/run.sh starts it)."""
    world.port = free_port()
    # The cheap backend's portal is config.serve with one libvirt call made a no-op (see
    # bench/logon_storm_portal.py); the TCG backend's is config.serve itself.
    app = "bench.logon_storm_portal:application" if world.backend == "cheap" else "config.asgi:application"
    subprocess.run([str(BIN / "celery"), "-A", "config", "purge", "-f"], cwd=ROOT, env=os.environ,
                   capture_output=True, check=True)
    world.processes["worker"] = _spawn(var_dir / "worker.log", [
        str(BIN / "celery"), "-A", "config", "worker", "--beat", "--schedule", str(var_dir / "celerybeat-schedule"),
        "--loglevel=INFO", f"--concurrency={WORKER_CONCURRENCY}", "--hostname", f"{RUN}-{os.getpid()}@%h"])
    world.processes["portal"] = _spawn(var_dir / "portal.log", [
        str(BIN / "python"), "-m", "config.serve", app, "--host", "127.0.0.1", "--port", str(world.port),
        *(["--workers", str(world.portal_workers)] if world.portal_workers > 1 else [])])
    _wait_until_up(world, var_dir)


def _spawn(log_path: Path, argv: list[str]) -> subprocess.Popen:
    log = open(log_path, "w")
    # Its own session: Ctrl+C reaches only the bench, which stops these itself.
    process = subprocess.Popen(argv, cwd=ROOT, env=os.environ, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    return process


def _wait_until_up(world: World, var_dir: Path) -> None:
    from urllib.request import urlopen

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for name, process in world.processes.items():
            if process.poll() is not None:
                raise BenchAborted(f"the {name} exited:\n{tail(var_dir / f'{name}.log')}")
        try:
            urlopen(f"{world.base_url}/login/", timeout=2).read()
            if " ready." in (var_dir / "worker.log").read_text():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchAborted("the portal or the worker did not come up within 60 s")


def stop_processes(world: World) -> None:
    import signal

    for process in world.processes.values():
        if process.poll() is None:
            process.terminate()
    for process in world.processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # prefork children, beat
        except ProcessLookupError:
            pass
        process.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- what the processes cost ----------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                todo += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children (the worker's prefork children), MiB."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def pids_named(name: str, *, parent: int | None = None) -> list[int]:
    """Processes called `name` (with `parent`: only the top one of each tree, whose children
    cpu_seconds() counts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, ppid = stat[stat.index("(") + 1:stat.rindex(")")], int(stat.rsplit(")", 1)[1].split()[1])
        if comm == name and (parent is None or ppid == parent):
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU of `pid` (and its children) so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in process_tree(pid) if children else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError):
            pass
    return total


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def open_connections(port: int) -> int:
    """Established TCP connections to `port` on loopback (the portal's HTTP and websockets)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count
