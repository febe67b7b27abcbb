"""Scale benchmark: the broker's own cost with many hosts and desktops (issue 10).

    .venv/bin/python bench/scale.py [--hosts 50] [--desktops 10000] [--placements 1000]

The bench builds a site in a PostgreSQL database of its own (vdi_scale_bench on
127.0.0.1:5432, created, migrated, VACUUM ANALYZEd and dropped again): --hosts hypervisor hosts,
two golden image versions, dedicated and floating pools whose desktops add up to --desktops
rows in the states a running site has (in use, powered off, spares, a few failed, queued,
cloning, stopping, deleting, and deleted ones kept as history), users entitled through
groups and one by one, console sessions and desktop events. Rows are bulk-created (untimed).

Every host is a libvirt test driver node of its own, `test:///<dir>/hNN.xml`: an XML file
with that host's CPUs and memory, a domain for every desktop placed there that has one
(running or shut off as its row says), and a "vdi" storage pool with their volumes. Each
connection to such a URI gets its own in-memory copy of the file, so the 50 hosts are 50
separate hypervisors. (`test:///default` would not do: every connection of a process to it
shares one state, so all hosts would show the same domains.) A few discrepancies are planted
as a crash would leave them: a domain that vanished, a guest that powered itself off, an
orphan domain and volume, desktops stuck in a transitional state. The broker's libvirt
connections are opened before the clock starts, as a worker's are in steady state.

Measured, each through the broker's real code, in this one process, one after the other:

  reconcile pass  what reconcile_everything_task fans out to the workers: for every host,
                  check_host + reconcile_host (as reconcile_host_task), then reconcile_pool for
                  every pool; the figure. Its third task, enforce_disconnect_timeouts, is timed
                  after it, on its own line. Reference, same run: libvirt-python alone asking
                  every host for its domains and their states (and, second figure, every
                  libvirt call the pass makes: getInfo, domains + states, volume names).
  placement       launch_desktop() for --placements users with no desktop yet, in dedicated
                  pools without spares: entitlement check, pool lock, size check, pick_host,
                  the Desktop row, its event, the provisioning task published to Redis. The
                  clone on the hypervisor is not included: no worker consumes the task.
  admin lists     GET /admin/broker/{pool,host,desktop}/ through Django's test Client as a
                  logged-in superuser (a fresh database connection per request, as a portal
                  with the default DATABASE_CONN_MAX_AGE=0 opens), median of --admin-repeats
                  after one untimed warm-up; SQL queries counted on one more request.

Isolation: the bench's own database (dropped at the end, also on Ctrl+C), Redis database 14
with a Celery queue of its own (deleted at the end), the name prefix vdibench-scale-, and
test-driver hosts only (nothing touches a real libvirtd). The table goes to stdout, its last
line is one JSON object; progress to stderr.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import secrets
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is sys.path[0] as a script

from bench import launch  # noqa: E402
from bench.launch import BenchAborted, progress  # noqa: E402

NAME_PREFIX = "vdibench-scale-"
QUEUE = "vdibench-scale"  # a Celery queue of our own on launch.py's Redis database; no worker takes it
DATABASE_NAME = "vdi_scale_bench"
SERVER_URL = "postgres://postgres@127.0.0.1:5432"
TARGETS = {"reconcile_pass_s": 10.0, "placement_p99_ms": 50.0, "admin_list_ms_max": 500.0}
# A host of a VDI site: 2 x 48 cores with hyper-threading, 1.5 TiB.
HOST_CPUS = 192
HOST_MEMORY_MIB = 1536 * 1024
GOLDEN_SIZE = 20 * 2**30
S_RUNNING, S_STOPPED = "running", "stopped"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=50, help="hypervisor hosts (default 50)")
    parser.add_argument("--desktops", type=int, default=10000, help="Desktop rows before placement (default 10000)")
    parser.add_argument("--placements", type=int, default=1000, help="new desktops placed (default 1000)")
    parser.add_argument("--admin-repeats", type=int, default=5, help="timed requests per admin page (default 5)")
    parser.add_argument("--server-url", default=SERVER_URL,
                        help=f"PostgreSQL server, trust auth, may create databases (default {SERVER_URL})")
    parser.add_argument("--database", default=DATABASE_NAME,
                        help=f"the bench's own database, dropped first if it exists (default {DATABASE_NAME})")
    parser.add_argument("--keep-database", action="store_true", help="leave the database for a look afterwards")
    parser.add_argument("--seed", type=int, default=10, help="random seed of the site's layout (default 10)")
    args = parser.parse_args()
    if args.hosts < 1 or args.desktops < 20 or args.placements < 1 or args.admin_repeats < 1:
        parser.error("--hosts, --placements and --admin-repeats must be at least 1, --desktops at least 20")
    return args


def request_bench_args(description: str, *, database: str, seed: int) -> argparse.Namespace:
    """The arguments of the benches that time requests on this bench's site (bench/api_lists.py,
    bench/dashboard.py): its size, its own database, and how many timed requests per URL."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--desktops", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--server-url", default=SERVER_URL)
    parser.add_argument("--database", default=database)
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--seed", type=int, default=seed)
    args = parser.parse_args()
    args.placements = 10  # build_site makes users for placements; none are placed here
    return args


def timed_get(client, url: str, repeats: int, *, measure) -> tuple[float, int, object]:
    """One warm-up GET (which must answer 200), the median of `repeats` timed ones in ms, and a
    last one whose SQL queries are counted and whose response `measure` reads (rows, bytes)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)
    if response.status_code != 200:
        raise BenchAborted(f"GET {url} answered {response.status_code}: {response.content[:200]!r}")
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.get(url)
        samples.append(time.perf_counter() - t0)
    with CaptureQueriesContext(connection) as captured:
        measured = measure(client.get(url))
    return 1000 * statistics.median(samples), len(captured.captured_queries), measured


def configure_environment(args, var_dir: Path) -> None:
    """Point settings at the bench's own state; must run before Django is imported."""
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VDI_VAR_DIR": str(var_dir),
        "DATABASE_URL": f"{args.server_url}/{args.database}",
        "VDI_NAME_PREFIX": NAME_PREFIX,
        "CELERY_BROKER_URL": launch.CELERY_BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
        "CHANNEL_LAYER_PREFIX": QUEUE,
        # The test Client's requests come from "testserver".
        "DJANGO_ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "VDI_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })


# -- the site's layout, planned in plain Python ---------------------------------------------


@dataclass
class PoolPlan:
    name: str
    kind: str  # "dedicated" or "floating"
    vcpus: int
    memory_mib: int
    min_spares: int
    max_desktops: int
    spares_powered_on: bool
    group: int
    takes_placements: bool = False
    desktops: int = 0


@dataclass
class DeskPlan:
    name: str
    pool: int
    host: int
    state: str
    user: int | None
    version: int  # 1 or 2
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    stuck: bool = False
    domain: str | None = None  # "running", "shutoff" or None (no domain on the host)
    volumes: bool = False
    data_disk: bool = False


TRANSITIONAL_DEDICATED = ["queued", "cloning", "starting", "stopping", "recomposing", "deleting"]
TRANSITIONAL_FLOATING = ["queued", "cloning", "starting", "deleting"]


def plan_site(args, rng: random.Random) -> tuple[list[PoolPlan], list[DeskPlan], int, int]:
    """Pools and desktops; returns (pools, desktops, users, groups)."""
    n_pools = max(2, round(args.desktops / 250))
    n_floating = max(1, n_pools // 4)
    weights = [rng.choice((1, 2, 3)) for _ in range(n_pools)]
    sizes = [args.desktops * w // sum(weights) for w in weights]
    sizes[0] += args.desktops - sum(sizes)
    n_groups = max(2, n_pools // 2)
    users = max(sizes) * 2 + args.desktops // 2
    pools = []
    for i, size in enumerate(sizes):
        floating = i >= n_pools - n_floating
        name = f"{'float' if floating else 'ded'}-{i:03d}"
        if floating:
            pools.append(PoolPlan(name, "floating", rng.choice((1, 2)), rng.choice((2048, 4096)),
                                  min_spares=max(1, size // 10), max_desktops=size + 20, spares_powered_on=True,
                                  group=i % n_groups))
        else:
            min_spares = 2 if i % 3 == 2 else 0
            pools.append(PoolPlan(name, "dedicated", rng.choice((1, 2)), rng.choice((2048, 4096)),
                                  min_spares=min_spares, max_desktops=size + 20, spares_powered_on=False,
                                  group=i % n_groups, takes_placements=min_spares == 0))
    placement_pools = [p for p in pools if p.takes_placements] or [pools[0]]
    for pool in placement_pools:
        pool.takes_placements = True
        pool.max_desktops += math.ceil(args.placements / len(placement_pools)) + 10

    desktops: list[DeskPlan] = []
    for index, (pool, size) in enumerate(zip(pools, sizes)):
        user_cursor = rng.randrange(users)
        # Every fourth floating pool and every second dedicated pool with spares is one spare
        # short: the pass tops it up (pick_host, a new row, a task), as after a launch.
        short = 1 if (pool.kind == "floating" and index % 4 == 0) or (pool.min_spares and index % 2 == 0) else 0
        spares = max(0, pool.min_spares - short)
        for n in range(1, size + 1):
            desk = DeskPlan(name=f"{NAME_PREFIX}{pool.name}-{n:04d}", pool=index, host=len(desktops) % args.hosts,
                            state="", user=None, version=2)
            if n <= spares:
                desk.state = S_RUNNING if pool.spares_powered_on else S_STOPPED
            else:
                desk.state, assigned = _state_of_a_used_desktop(pool.kind, rng)
                if assigned:
                    desk.user = user_cursor % users
                    user_cursor += 1
                    desk.version = 1 if pool.kind == "dedicated" and rng.random() < 0.7 else 2
            if desk.state in TRANSITIONAL_DEDICATED and rng.random() < 0.1:
                desk.stuck = True  # a worker died on it more than 10 minutes ago
            _place_on_host(desk, pool, rng)
            desktops.append(desk)
        pool.desktops = size
    return pools, desktops, users, n_groups


def _state_of_a_used_desktop(kind: str, rng: random.Random) -> tuple[str, bool]:
    """(state, has a user) of a desktop that is not a ready spare."""
    roll = rng.random()
    if kind == "dedicated":
        if roll < 0.45:
            return "running", True
        if roll < 0.88:
            return "stopped", True
        if roll < 0.96:
            return "deleted", True  # history: a user who left
        if roll < 0.97:
            return "failed", True
        return rng.choice(TRANSITIONAL_DEDICATED), True
    if roll < 0.70:
        return "running", True  # in use
    if roll < 0.95:
        return "deleted", False  # wiped after use: history
    if roll < 0.96:
        return "failed", False
    return rng.choice(TRANSITIONAL_FLOATING), False


def _place_on_host(desk: DeskPlan, pool: PoolPlan, rng: random.Random) -> None:
    """What the host has of this desktop; a few planted discrepancies for the reconciler."""
    domain = {"running": "running", "stopping": "running", "stopped": "shutoff", "starting": "shutoff",
              "recomposing": "shutoff", "deleting": "shutoff"}.get(desk.state)
    if desk.state == "running":
        roll = rng.random()
        if roll < 0.002:
            domain = None  # vanished behind the broker's back
        elif roll < 0.004:
            domain = "shutoff"  # the guest powered itself off
    desk.domain = domain
    desk.volumes = domain is not None or desk.state in ("cloning", "failed") or (
        desk.state == "running" and domain is None)
    desk.data_disk = pool.kind == "dedicated"


# -- the hosts: libvirt test driver nodes ------------------------------------------------------


def host_xml(host_index: int, desktops: list[DeskPlan], pools: list[PoolPlan], *, storage_pool: str,
             storage_path: str, image_pool: str, image_path: str, orphan: bool) -> str:
    domains, volumes = [], []
    for desk in desktops:
        pool = pools[desk.pool]
        if desk.domain:
            runstate = "" if desk.domain == "running" else "<test:runstate>5</test:runstate>"
            domains.append(
                "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
                f"<name>{escape(desk.name)}</name><uuid>{desk.uuid}</uuid>"
                f"<memory unit='MiB'>{pool.memory_mib}</memory><vcpu>{pool.vcpus}</vcpu>"
                f"<os><type>hvm</type></os>{runstate}</domain>")
        if desk.volumes:
            names = [f"{desk.name}.qcow2"] + ([f"{desk.name}-data.qcow2"] if desk.data_disk else [])
            volumes += [_volume(name, storage_path) for name in names]
    if orphan:  # left by a worker that crashed between define and its database write
        name = f"{NAME_PREFIX}lost-h{host_index:02d}"
        domains.append("<domain type='test'>"
                       f"<name>{name}</name><memory unit='MiB'>2048</memory><vcpu>1</vcpu>"
                       "<os><type>hvm</type></os></domain>")
        volumes.append(_volume(f"{name}.qcow2", storage_path))
    # Another tenant's guest: not the broker's prefix, never touched.
    domains.append("<domain type='test'><name>monitoring-agent</name><memory unit='MiB'>512</memory>"
                   "<vcpu>1</vcpu><os><type>hvm</type></os></domain>")
    golden = [_volume(f"scale-golden-v{n}.qcow2", image_path) for n in (1, 2)]
    return "\n".join([
        "<node>",
        f"<cpu><mhz>2400</mhz><model>x86_64</model><active>{HOST_CPUS}</active><nodes>2</nodes>"
        f"<sockets>1</sockets><cores>{HOST_CPUS // 4}</cores><threads>2</threads></cpu>",
        f"<memory>{HOST_MEMORY_MIB * 1024}</memory>",
        *domains,
        f"<pool type='dir'><name>{storage_pool}</name><target><path>{storage_path}</path></target>",
        *volumes,
        "</pool>",
        f"<pool type='dir'><name>{image_pool}</name><target><path>{image_path}</path></target>",
        *golden,
        "</pool>",
        "</node>",
    ])


def _volume(name: str, directory: str) -> str:
    return (f"<volume type='file'><name>{escape(name)}</name><capacity>{GOLDEN_SIZE}</capacity>"
            f"<allocation>{2**28}</allocation><target><path>{directory.rstrip('/')}/{escape(name)}</path>"
            "</target></volume>")


# -- the database ----------------------------------------------------------------------------------


def create_database(args) -> None:
    import psycopg

    with psycopg.connect(f"{args.server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')


def drop_database(args) -> None:
    import psycopg

    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{args.server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


@dataclass
class Site:
    hosts: list
    pools: list
    pool_plans: list[PoolPlan]
    placement_users: list
    admin: object
    desktops: int
    users: int
    entitlements: int
    console_sessions: int
    events: int
    stuck: int
    planted: dict


def build_site(args, var_dir: Path, rng: random.Random) -> Site:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from broker.models import ConsoleSession, Desktop, DesktopEvent, Entitlement, GoldenImage, Host, Pool
    from broker.services.hosts import check_host
    from broker.services.images import publish_image_version

    call_command("migrate", verbosity=0, interactive=False)
    pool_plans, desk_plans, n_users, n_groups = plan_site(args, rng)

    progress(f"writing {args.hosts} test-driver host files")
    node_dir = var_dir / "hosts"
    node_dir.mkdir()
    by_host: list[list[DeskPlan]] = [[] for _ in range(args.hosts)]
    for desk in desk_plans:
        by_host[desk.host].append(desk)
    hosts = []
    for h in range(args.hosts):
        path = node_dir / f"h{h + 1:02d}.xml"
        path.write_text(host_xml(h + 1, by_host[h], pool_plans, storage_pool=settings.VDI_STORAGE_POOL,
                                 storage_path=settings.VDI_STORAGE_PATH, image_pool=settings.VDI_IMAGE_POOL,
                                 image_path=settings.VDI_IMAGE_PATH, orphan=h % 5 == 0))
        hosts.append(Host(name=f"scale-h{h + 1:02d}", libvirt_uri=f"test://{path}", domain_type="kvm"))
    hosts = Host.objects.bulk_create(hosts)
    # The host check a worker did long ago: CPUs and memory known, libvirt connection open.
    for host in hosts:
        check_host(host_id=host.pk)

    progress("golden image, two versions")
    image = GoldenImage.objects.create(name="scale-linux", display_name="Scale Linux")
    versions = {n: publish_image_version(image=image, path=f"{settings.VDI_IMAGE_PATH}/scale-golden-v{n}.qcow2",
                                         host=hosts[0], notes="scale benchmark") for n in (1, 2)}

    progress(f"{n_users + args.placements} users, {n_groups} groups")
    User = get_user_model()
    users = User.objects.bulk_create(
        [User(username=f"scale-user-{u:05d}", password="!", email=f"u{u}@example.com") for u in range(n_users)]
        + [User(username=f"scale-new-{u:05d}", password="!") for u in range(args.placements)],
        batch_size=2000)
    placement_users, users = users[n_users:], users[:n_users]
    groups = Group.objects.bulk_create([Group(name=f"scale-department-{g:02d}") for g in range(n_groups)])
    newcomers = Group.objects.create(name="scale-newcomers")
    membership = User.groups.through
    membership.objects.bulk_create(
        [membership(user_id=user.pk, group_id=groups[(i + k) % n_groups].pk)
         for i, user in enumerate(users) for k in (0, 1)]
        + [membership(user_id=user.pk, group_id=newcomers.pk) for user in placement_users], batch_size=5000)

    progress(f"{len(pool_plans)} pools, {len(desk_plans)} desktops")
    pools = Pool.objects.bulk_create([
        Pool(name=p.name, display_name=f"Scale {p.kind} {p.name}", kind=p.kind, image=image, vcpus=p.vcpus,
             memory_mib=p.memory_mib, min_spares=p.min_spares, max_desktops=p.max_desktops,
             spares_powered_on=p.spares_powered_on, desktop_counter=p.desktops,
             data_disk_gib=1 if p.kind == "dedicated" else 0)
        for p in pool_plans])
    entitlements = [Entitlement(pool=pool, group=groups[plan.group]) for pool, plan in zip(pools, pool_plans)]
    entitlements += [Entitlement(pool=pool, group=newcomers) for pool, plan in zip(pools, pool_plans)
                     if plan.takes_placements]
    entitlements += [Entitlement(pool=pools[d.pool], user=users[d.user]) for d in desk_plans
                     if d.user is not None and pool_plans[d.pool].kind == "dedicated" and d.state != "deleted"]
    Entitlement.objects.bulk_create(entitlements, batch_size=5000)

    now = timezone.now()
    rows = []
    for desk in desk_plans:
        pool = pool_plans[desk.pool]
        if desk.state in TRANSITIONAL_DEDICATED:
            changed = now - (timedelta(minutes=30) if desk.stuck else timedelta(seconds=rng.uniform(5, 300)))
        else:
            changed = now - timedelta(hours=rng.uniform(1, 24 * 30))
        rows.append(Desktop(
            pool=pools[desk.pool], host=hosts[desk.host], user=users[desk.user] if desk.user is not None else None,
            image_version=versions[desk.version], name=desk.name, uuid=desk.uuid, state=desk.state,
            state_changed_at=changed, assigned_at=changed if desk.user is not None else None,
            data_volume_name=f"{desk.name}-data.qcow2" if pool.kind == "dedicated" else "",
            vnc_port=5900 + len(rows) % 1000 if desk.state == "running" else None,
            provisioning_attempts=1 if desk.state != "queued" else 0,
            # Distinct by construction: 10,000 random 24-bit MACs collide (the birthday bound).
            mac_address="52:54:00" + "".join(f":{(len(rows) >> shift) & 255:02x}" for shift in (16, 8, 0)),
            last_error="clone failed: no space left on device" if desk.state == "failed" else ""))
    desktops = Desktop.objects.bulk_create(rows, batch_size=2000)

    progress("console sessions and desktop events")
    sessions, events = [], []
    for desktop, desk in zip(desktops, desk_plans):
        events += [DesktopEvent(desktop=desktop, from_state="", to_state="queued", message="created"),
                   DesktopEvent(desktop=desktop, from_state="queued", to_state="cloning", message="worker picked up"),
                   DesktopEvent(desktop=desktop, from_state="cloning", to_state=desk.state, message="scale bench")]
        if desk.user is None:
            continue
        for back in (3, 2):  # yesterday's and the day before's consoles
            sessions.append(ConsoleSession(user=users[desk.user], desktop=desktop, protocol="vnc",
                                           closed_at=now - timedelta(days=back - 1, hours=rng.uniform(0, 8)),
                                           last_seen_at=now - timedelta(days=back - 1), close_code=1000))
        if desk.state != "running":
            continue
        if rng.random() < 0.6:  # someone at work in it now
            sessions.append(ConsoleSession(user=users[desk.user], desktop=desktop, protocol="vnc",
                                           last_seen_at=now - timedelta(seconds=rng.uniform(0, 50)),
                                           last_input_at=now - timedelta(seconds=rng.uniform(0, 1800))))
        else:
            # Disconnected a while ago: within the pool's disconnect timeout (30 min) mostly, as
            # earlier passes have dealt with the rest; a few just past it.
            away = timedelta(minutes=rng.uniform(31, 40) if rng.random() < 0.02 else rng.uniform(1, 25))
            sessions.append(ConsoleSession(user=users[desk.user], desktop=desktop, protocol="vnc",
                                           closed_at=now - away, last_seen_at=now - away, close_code=1006))
    ConsoleSession.objects.bulk_create(sessions, batch_size=5000)
    DesktopEvent.objects.bulk_create(events, batch_size=5000)
    with connection.cursor() as cursor:
        # auto_now_add stamped everything "now": spread creation over the past as on a live site.
        cursor.execute("UPDATE broker_desktop SET created_at = CASE WHEN state = 'queued' THEN state_changed_at "
                       "ELSE state_changed_at - random() * interval '60 days' END")
        cursor.execute("UPDATE broker_consolesession SET opened_at = COALESCE(closed_at, now()) "
                       "- random() * interval '8 hours'")
        cursor.execute("UPDATE broker_desktopevent e SET created_at = d.created_at FROM broker_desktop d "
                       "WHERE d.id = e.desktop_id")
        cursor.execute("VACUUM ANALYZE")  # what autovacuum would have done on a site that grew to this

    admin = User.objects.create_superuser("scale-admin", email="admin@example.com", password=None)
    running = [d for d in desk_plans if d.state == "running"]
    planted = {
        "vanished": sum(1 for d in running if d.domain is None),
        "powered_off": sum(1 for d in running if d.domain == "shutoff"),
        "orphan_domains": sum(1 for h in range(args.hosts) if h % 5 == 0),
    }
    return Site(hosts=hosts, pools=pools, pool_plans=pool_plans, placement_users=placement_users, admin=admin,
                desktops=len(desktops), users=len(users) + len(placement_users), entitlements=len(entitlements),
                console_sessions=len(sessions), events=len(events), stuck=sum(d.stuck for d in desk_plans),
                planted=planted)


# -- measuring ------------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return seconds * 1000


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def libvirt_reference(hosts, *, storage_pool: str) -> tuple[float, float]:
    """Seconds for libvirt-python alone: (domains with their states on every host, every libvirt
    call of the pass on every host). Connections opened before the clock, as the broker's are.
    The states come from one getAllDomainStats call per host, as the broker's driver asks."""
    import libvirt

    conns = [libvirt.open(host.libvirt_uri) for host in hosts]
    try:
        t0 = time.perf_counter()
        for conn in conns:
            for domain, record in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
                domain.name(), record["state.state"]
        domains_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for conn in conns:
            conn.getInfo()
            for domain, record in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
                domain.name(), domain.UUIDString(), record["state.state"]
            storage = conn.storagePoolLookupByName(storage_pool)
            storage.refresh(0)
            for volume in storage.listAllVolumes(0):
                volume.name()
        all_s = time.perf_counter() - t0
    finally:
        for conn in conns:
            conn.close()
    return domains_s, all_s


@dataclass
class PassResult:
    total_s: float  # hosts + pools
    host_s: list[float]
    pool_s: list[float]
    timeouts_s: float  # enforce_disconnect_timeouts, the pass's third task
    did: dict


def reconcile_pass(site: Site) -> PassResult:
    """What the workers do for one reconcile_everything_task, one task after the other."""
    from broker.hypervisor import HostUnreachable
    from broker.models import Host, Pool
    from broker.services.desktop_sessions import enforce_disconnect_timeouts
    from broker.services.hosts import check_host, reconcile_host
    from broker.services.pools import reconcile_pool

    did: dict[str, int] = {}
    host_s, pool_s = [], []
    t_pass = time.perf_counter()
    # The task's own queries: which hosts and pools.
    host_ids = list(Host.objects.filter(is_enabled=True, kind=Host.Kind.HYPERVISOR).values_list("pk", flat=True))
    pool_ids = list(Pool.objects.values_list("pk", flat=True))
    for host_id in host_ids:
        t0 = time.perf_counter()
        host = check_host(host_id=host_id)  # reconcile_host_task's body
        if host.is_online:
            try:
                done = reconcile_host(host_id=host_id)
            except HostUnreachable:
                done = {"unreachable": [host_id]}
            for key, names in done.items():
                did[key] = did.get(key, 0) + len(names)
        host_s.append(time.perf_counter() - t0)
    for pool_id in pool_ids:
        t0 = time.perf_counter()
        done = reconcile_pool(pool_id=pool_id)
        pool_s.append(time.perf_counter() - t0)
        for key, value in done.items():
            if isinstance(value, bool):
                continue
            did[f"pool_{key}"] = did.get(f"pool_{key}", 0) + int(value)
    total_s = time.perf_counter() - t_pass
    t0 = time.perf_counter()
    did["disconnected_too_long"] = enforce_disconnect_timeouts()
    return PassResult(total_s=total_s, host_s=host_s, pool_s=pool_s, timeouts_s=time.perf_counter() - t0, did=did)


@dataclass
class PlacementResult:
    launch_s: list[float]
    pick_host_s: list[float]
    hosts_used: int
    per_host_max: int
    gc_pauses_s: list[float]  # Python's full (generation 2) collections during the launches
    cpu_s: list[float]  # this process's CPU time per launch (PostgreSQL's and Redis's not in it)


class FullCollections:
    """How long Python's generation-2 garbage collections took while open: a launch that
    happens to run one is slower by that much, in the broker's processes as here."""

    def __init__(self):
        self.pauses: list[float] = []
        self._started = 0.0

    def _callback(self, phase, info):
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def __enter__(self):
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)


def place_desktops(site: Site) -> PlacementResult:
    from broker import selectors
    from broker.models import Desktop, DesktopState
    from broker.services.assignment import launch_desktop

    targets = [pool for pool, plan in zip(site.pools, site.pool_plans) if plan.takes_placements]
    # pick_host alone, for the breakdown: the read that decides the host, no row written.
    pick_s = []
    for i in range(min(200, len(site.placement_users))):
        t0 = time.perf_counter()
        selectors.pick_host(pool=targets[i % len(targets)])
        pick_s.append(time.perf_counter() - t0)
    launch_s, cpu_s, placed_on = [], [], {}
    with FullCollections() as collections:
        for i, user in enumerate(site.placement_users):
            pool = targets[i % len(targets)]
            c0, t0 = time.process_time(), time.perf_counter()
            desktop = launch_desktop(user=user, pool=pool)
            launch_s.append(time.perf_counter() - t0)
            cpu_s.append(time.process_time() - c0)
            if desktop.state != DesktopState.QUEUED or desktop.host_id is None or desktop.user_id != user.pk:
                raise BenchAborted(f"launch for {user} gave {desktop} in {desktop.state} on {desktop.host_id}: "
                                   "not a newly placed desktop")
            placed_on[desktop.host_id] = placed_on.get(desktop.host_id, 0) + 1
    new = Desktop.objects.filter(user__in=site.placement_users).count()
    if new != len(site.placement_users):
        raise BenchAborted(f"{new} desktops for {len(site.placement_users)} launches")
    return PlacementResult(launch_s=launch_s, pick_host_s=pick_s, hosts_used=len(placed_on),
                           per_host_max=max(placed_on.values()), gc_pauses_s=collections.pauses,
                           cpu_s=cpu_s)


ADMIN_PAGES = {"pool": "/admin/broker/pool/", "host": "/admin/broker/host/", "desktop": "/admin/broker/desktop/"}


@dataclass
class AdminResult:
    ms: dict[str, float]
    queries: dict[str, int]
    rows: dict[str, int]


def admin_client(site: Site):
    """A test client logged in as the site's admin, with a verified second factor: staff reach
    the admin only so (identity/mfa/), as in production."""
    from django.test import Client
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    client = Client()
    client.force_login(site.admin)
    device = (TOTPDevice.objects.filter(user=site.admin, confirmed=True).first()
              or TOTPDevice.objects.create(user=site.admin, name="bench", confirmed=True))
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def admin_lists(site: Site, repeats: int) -> AdminResult:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = admin_client(site)
    times, queries, rows = {}, {}, {}
    for page, url in ADMIN_PAGES.items():
        response = client.get(url)  # warm-up: templates, URL resolver, the admin's first imports
        if response.status_code != 200:
            raise BenchAborted(f"GET {url} answered {response.status_code}")
        rows[page] = response.context_data["cl"].result_count
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            response = client.get(url)
            samples.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise BenchAborted(f"GET {url} answered {response.status_code}")
        times[page] = ms(statistics.median(samples))
        with CaptureQueriesContext(connection) as captured:
            client.get(url)
        queries[page] = len(captured.captured_queries)
    return AdminResult(ms=times, queries=queries, rows=rows)


# -- report ------------------------------------------------------------------------------------------


def report(args, site: Site, reference: tuple[float, float], result: PassResult, placement: PlacementResult,
           admin: AdminResult) -> tuple[str, dict]:
    domains_s, all_calls_s = reference
    p50_launch, p99_launch = ms(percentile(placement.launch_s, 50)), ms(percentile(placement.launch_s, 99))
    figures = {
        "reconcile_pass_s": round(result.total_s, 3),
        "placement_p99_ms": round(p99_launch, 2),
        "admin_list_ms_max": round(max(admin.ms.values()), 1),
    }
    met = {key: figures[key] < target for key, target in TARGETS.items()}
    lines = [
        f"Scale benchmark: {args.hosts} hosts (libvirt test driver, a node file each), {site.desktops} desktops "
        f"in {len(site.pools)} pools, {site.users} users, {site.entitlements} entitlements, "
        f"{site.console_sessions} console sessions, {site.events} desktop events; PostgreSQL; one process, "
        f"sequential; {os.cpu_count()} CPUs, load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        f"{'measure':<44}{'figure':>12}{'target':>10}  ",
        f"{'reconcile pass (all hosts + all pools) s':<44}{result.total_s:>12.3f}{'< 10':>10}  "
        f"{'ok' if met['reconcile_pass_s'] else 'MISSED'}",
        f"{'  per host (check + reconcile) ms p50/max':<44}"
        f"{ms(statistics.median(result.host_s)):>6.1f}/{ms(max(result.host_s)):<5.1f}",
        f"{'  per pool (reconcile_pool) ms p50/max':<44}"
        f"{ms(statistics.median(result.pool_s)):>6.1f}/{ms(max(result.pool_s)):<5.1f}",
        f"{'  then enforce_disconnect_timeouts s':<44}{result.timeouts_s:>12.3f}",
        f"{'  reference: libvirt domains + states s':<44}{domains_s:>12.3f}",
        f"{'  reference: every libvirt call of the pass s':<44}{all_calls_s:>12.3f}",
        f"{'  broker time over those libvirt calls s':<44}{result.total_s - all_calls_s:>12.3f}",
        f"{'placement (launch_desktop) ms p50':<44}{p50_launch:>12.2f}",
        f"{'placement (launch_desktop) ms p99':<44}{p99_launch:>12.2f}{'< 50':>10}  "
        f"{'ok' if met['placement_p99_ms'] else 'MISSED'}",
        f"{'  own CPU per launch ms p50/p99':<44}{ms(percentile(placement.cpu_s, 50)):>6.2f}/"
        f"{ms(percentile(placement.cpu_s, 99)):<5.2f}",
        f"{'  Python full GC pauses in them: n, max ms':<44}{len(placement.gc_pauses_s):>6d}/"
        f"{ms(max(placement.gc_pauses_s, default=0)):<5.1f}",
        f"{'  pick_host alone ms p50/p99':<44}{ms(percentile(placement.pick_host_s, 50)):>6.2f}/"
        f"{ms(percentile(placement.pick_host_s, 99)):<5.2f}",
    ]
    for page in ADMIN_PAGES:
        lines.append(f"{'admin ' + page + ' list ms (' + str(admin.queries[page]) + ' queries, ' + str(admin.rows[page]) + ' rows)':<44}"
                     f"{admin.ms[page]:>12.1f}{'< 500':>10}  {'ok' if admin.ms[page] < 500 else 'MISSED'}")
    lines += [
        "",
        f"The pass did: {', '.join(f'{k} {v}' for k, v in sorted(result.did.items()) if v) or 'nothing'} "
        f"(planted: {site.planted['vanished']} vanished, {site.planted['powered_off']} powered off, "
        f"{site.planted['orphan_domains']} orphan domains, {site.stuck} stuck desktops).",
        f"Placement: {len(placement.launch_s)} launches by users without a desktop, in "
        f"{sum(p.takes_placements for p in site.pool_plans)} dedicated pools without spares, over "
        f"{placement.hosts_used} hosts (at most {placement.per_host_max} on one). Each call: entitlement check, "
        "pool lock, size check, pick_host, the row, its event, the provisioning task published to Redis. "
        "NOT included: the clone, define and start on the hypervisor (no worker consumes the tasks).",
        "Shortcuts: the pass runs the workers' tasks one after the other in one process with one database "
        "connection; a Celery worker with DATABASE_CONN_MAX_AGE=0 also opens a connection per task. "
        "Test-driver hosts answer in-process: a remote libvirt adds a network round trip per call "
        "(getInfo, getAllDomainStats, the storage pool's refresh and volume listing).",
    ]
    summary = {
        "hosts": args.hosts,
        "desktops": site.desktops,
        "pools": len(site.pools),
        **figures,
        "targets": TARGETS,
        "targets_met": met,
        "disconnect_timeouts_s": round(result.timeouts_s, 3),
        "reconcile_host_ms_p50": round(ms(statistics.median(result.host_s)), 2),
        "reconcile_host_ms_max": round(ms(max(result.host_s)), 2),
        "reconcile_pool_ms_p50": round(ms(statistics.median(result.pool_s)), 2),
        "reconcile_pool_ms_max": round(ms(max(result.pool_s)), 2),
        "libvirt_domains_states_s": round(domains_s, 4),
        "libvirt_all_calls_s": round(all_calls_s, 4),
        "broker_over_libvirt_s": round(result.total_s - all_calls_s, 3),
        "reconcile_did": result.did,
        "placements": len(placement.launch_s),
        "placement_p50_ms": round(p50_launch, 2),
        "placement_cpu_p50_ms": round(ms(percentile(placement.cpu_s, 50)), 2),
        "placement_cpu_p99_ms": round(ms(percentile(placement.cpu_s, 99)), 2),
        "placement_gc_full_pauses": len(placement.gc_pauses_s),
        "placement_gc_full_pause_max_ms": round(ms(max(placement.gc_pauses_s, default=0)), 1),
        "pick_host_p50_ms": round(ms(percentile(placement.pick_host_s, 50)), 2),
        "pick_host_p99_ms": round(ms(percentile(placement.pick_host_s, 99)), 2),
        "placement_includes_clone": False,
        "admin_list_ms": {page: round(value, 1) for page, value in admin.ms.items()},
        "admin_queries": admin.queries,
        "admin_rows": admin.rows,
    }
    return "\n".join(lines), summary


# -- main --------------------------------------------------------------------------------------------


def run(args, var_dir: Path, state: dict) -> tuple[str, dict]:
    configure_environment(args, var_dir)
    create_database(args)
    state["database"] = True
    import django

    django.setup()
    from django.conf import settings

    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    progress(f"building the site in {args.database}: {args.hosts} hosts, {args.desktops} desktops")
    site = build_site(args, var_dir, rng)
    progress(f"site built in {time.perf_counter() - t0:.1f} s")

    progress("reference: libvirt-python alone on every host")
    references = [libvirt_reference(site.hosts, storage_pool=settings.VDI_STORAGE_POOL)]
    progress("one reconcile pass: every host, then every pool")
    result = reconcile_pass(site)
    references.append(libvirt_reference(site.hosts, storage_pool=settings.VDI_STORAGE_POOL))
    reference = (min(r[0] for r in references), min(r[1] for r in references))
    progress(f"pass: {result.total_s:.2f} s; admin list pages")
    admin = admin_lists(site, args.admin_repeats)
    progress(f"placing {args.placements} desktops")
    placement = place_desktops(site)
    return report(args, site, reference, result, placement, admin)


def clean_up(args, state: dict, var_dir: Path) -> list[str]:
    """Our Celery queue, our database, our files; every step tried. Returns what is left."""
    import shutil

    left = []
    if "django" in sys.modules:
        try:
            import redis

            # The queue (the tasks the run published) and kombu's record of its exchange.
            redis.Redis.from_url(launch.CELERY_BROKER_URL).delete(
                QUEUE, f"_kombu.binding.{QUEUE}", f"_kombu.binding_permanent.{QUEUE}")
        except Exception as exc:  # noqa: BLE001 - report and go on with the next step
            progress(f"cleanup: deleting the queue {QUEUE} failed: {exc!r}")
            left.append(QUEUE)
    if state.get("database") and not args.keep_database:
        try:
            drop_database(args)
        except Exception as exc:  # noqa: BLE001
            progress(f"cleanup: dropping {args.database} failed: {exc!r}")
            left.append(args.database)
    shutil.rmtree(var_dir, ignore_errors=True)
    return left


def main() -> int:
    """launch.run_bench without its failure report (it lists every desktop)."""
    args = parse_args()
    return launch.run_bench(run, args=args, temp_prefix=NAME_PREFIX, report_failure=None,
                            clean_up=lambda state, var_dir: clean_up(args, state, var_dir))


if __name__ == "__main__":
    sys.exit(main())
