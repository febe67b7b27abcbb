"""Directory sync benchmark: a generated company in its own OpenLDAP, synced and logged into.

    .venv/bin/python bench/ldap_sync.py [--users 5000] [--groups 200] [--database-url URL]

Generates USERS people in GROUPS groupOfNames (each person in one department group and two
project groups), loads them into a throwaway slapd on a loopback port (slapadd, paged
searches for the service account, OpenLDAP's default size limit of 500 for everyone else), and
times, through the same code paths production uses:

  mirror      first sync with no group entitled: directory groups become Django groups
  full        every group entitled: the sync creates every user and membership
  no-change   the same directory again
  churn       1% of users renamed, 1% moved to another group, 0.2% deleted from the directory
  logins      POST /login/ through Django's test client: a directory account (bind, search,
              groups, mirror) against a local account (Django's default PBKDF2 hasher)

Isolation: a temporary VDI_VAR_DIR, slapd and SQLite database (or an EMPTY database given with
--database-url: it is migrated, and flushed at the end). The table goes to stdout, its last line
is one JSON object; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Bench-Pw-2718"
LOCAL_PASSWORD = "Local-Bench-Pw-3141"


def progress(message: str) -> None:
    print(f"[ldap-bench] {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--logins", type=int, default=30, help="logins timed per kind of account (default 30)")
    parser.add_argument("--database-url", help="an EMPTY database instead of a temporary SQLite file")
    args = parser.parse_args()
    if args.users < 10 or args.groups < 3:
        parser.error("at least 10 users and 3 groups")
    return args


def generate_ldif(users: int, groups: int, rng: random.Random):
    from tests.support.slapd import SUFFIX, ssha

    # One salted hash for everyone: hashing 5,000 times would only slow the set-up down.
    password_hash = ssha(PASSWORD)
    members: dict[int, list[str]] = {g: [] for g in range(groups)}
    groups_of: dict[int, tuple] = {}
    chunks = []
    for n in range(users):
        uid = f"u{n:05d}"
        chunks.append(
            f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: User {n}\n"
            f"givenName: User\nsn: Number {n}\nmail: {uid}@example.com\nuserPassword: {password_hash}\n\n"
        )
        department = n % groups
        projects = rng.sample([g for g in range(groups) if g != department], 2)
        groups_of[n] = (department, *projects)
        for g in groups_of[n]:
            members[g].append(f"uid={uid},ou=people,{SUFFIX}")
    for g in range(groups):
        lines = "".join(f"member: {dn}\n" for dn in members[g])
        chunks.append(f"dn: cn=group-{g:03d},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: group-{g:03d}\n"
                      f"{lines}\n")
    return "".join(chunks), sum(len(m) for m in members.values()), groups_of


def configure_environment(args, var_dir: Path, slapd) -> None:
    from tests.support.slapd import SERVICE_DN, SUFFIX

    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VDI_VAR_DIR": str(var_dir),
        "DATABASE_URL": args.database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "CHANNEL_LAYER_PREFIX": "vdibench",
        "VDI_LOG_LEVEL": "WARNING",
        "AUTH_LDAP_SERVER_URI": slapd.uri,
        "AUTH_LDAP_BIND_DN": SERVICE_DN,
        "AUTH_LDAP_BIND_PASSWORD": slapd.service_password,
        "AUTH_LDAP_USER_SEARCH_BASE": f"ou=people,{SUFFIX}",
        "AUTH_LDAP_GROUP_SEARCH_BASE": f"ou=groups,{SUFFIX}",
        "AUTH_LDAP_GROUP_TYPE": "groupOfNames",
    })


@contextmanager
def counted_queries():
    from django.db import connection

    box = {"queries": 0}

    def count(execute, sql, params, many, context):
        box["queries"] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield box


def timed_sync(label: str, rows: list) -> None:
    from identity.models import DirectorySyncRun
    from identity.services import sync

    run = sync.queue_sync(trigger=DirectorySyncRun.Trigger.COMMAND)
    with counted_queries() as box:
        started = time.perf_counter()
        run = sync.run_directory_sync(run_id=run.pk)
        seconds = time.perf_counter() - started
    if run.status != DirectorySyncRun.Status.SUCCEEDED:
        raise RuntimeError(f"{label}: sync {run.status}: {run.errors[:3]}")
    rows.append({
        "step": label, "seconds": round(seconds, 3), "queries": box["queries"],
        "created": run.users_created, "updated": run.users_updated, "deactivated": run.users_deactivated,
        "added": run.memberships_added, "removed": run.memberships_removed, "groups_created": run.groups_created,
    })
    progress(f"{label}: {seconds:.2f} s, {box['queries']} queries")


def timed_read(rows: list) -> None:
    from identity.directory import DirectoryConfig, read_directory

    started = time.perf_counter()
    snapshot = read_directory(DirectoryConfig.from_settings())
    seconds = time.perf_counter() - started
    rows.append({"step": "directory read only", "seconds": round(seconds, 3), "queries": 0, "created": 0,
                 "updated": 0, "deactivated": 0, "added": 0, "removed": 0, "groups_created": 0})
    progress(f"directory read: {len(snapshot.users)} users, {len(snapshot.groups)} groups in {seconds:.2f} s")


def churn(slapd, users: int, groups: int, groups_of: dict, rng: random.Random) -> dict:
    import ldap

    from tests.support.slapd import SUFFIX

    conn = slapd.connection()
    picked = rng.sample(range(users), max(3, users // 100 * 2 + users // 500))
    renamed, moved, deleted = picked[: users // 100], picked[users // 100: users // 50], picked[users // 50:]
    for n in renamed:
        conn.modify_s(f"uid=u{n:05d},ou=people,{SUFFIX}", [(ldap.MOD_REPLACE, "sn", [f"Renamed {n}".encode()])])
    for n in moved:
        dn = f"uid=u{n:05d},ou=people,{SUFFIX}"
        department = groups_of[n][0]
        target = next(g for g in range(groups) if g not in groups_of[n])
        conn.modify_s(f"cn=group-{department:03d},ou=groups,{SUFFIX}", [(ldap.MOD_DELETE, "member", [dn.encode()])])
        conn.modify_s(f"cn=group-{target:03d},ou=groups,{SUFFIX}", [(ldap.MOD_ADD, "member", [dn.encode()])])
    for n in deleted:
        dn = f"uid=u{n:05d},ou=people,{SUFFIX}"
        for g in groups_of[n]:
            conn.modify_s(f"cn=group-{g:03d},ou=groups,{SUFFIX}", [(ldap.MOD_DELETE, "member", [dn.encode()])])
        conn.delete_s(dn)
    conn.unbind_s()
    return {"renamed": len(renamed), "moved": len(moved), "deleted": len(deleted)}


def time_logins(count: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.test import Client

    User = get_user_model()
    local = User.objects.create(username="local-bench", password=make_password(LOCAL_PASSWORD))
    directory_users = list(User.objects.filter(directory_account__isnull=False, is_active=True)
                           .order_by("?").values_list("username", flat=True)[:count])
    results = {}
    for kind, names, password in [("directory", directory_users, PASSWORD),
                                  ("local", [local.username] * count, LOCAL_PASSWORD)]:
        client = Client(HTTP_HOST="127.0.0.1")
        client.get("/login/")  # warm the view and templates
        samples = []
        for name in names:
            started = time.perf_counter()
            response = client.post("/login/", {"username": name, "password": password})
            samples.append((time.perf_counter() - started) * 1000)
            if response.status_code != 302:
                raise RuntimeError(f"{kind} login of {name} failed: {response.status_code}")
            client.post("/logout/")
        samples.sort()
        results[kind] = {"n": len(samples), "median_ms": round(statistics.median(samples), 1),
                         "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 1),
                         "max_ms": round(samples[-1], 1)}
        progress(f"{kind} logins: median {results[kind]['median_ms']} ms")
    return results


def render(args, rows, logins, memberships, churned, database) -> str:
    lines = [
        f"LDAP directory sync: {args.users} users, {args.groups} groups, {memberships} memberships "
        f"(groupOfNames, paged search), database {database}",
        "",
        f"{'step':<30}{'seconds':>9}{'queries':>9}{'created':>9}{'updated':>9}{'deactiv.':>9}"
        f"{'members+':>10}{'members-':>10}",
    ]
    for row in rows:
        lines.append(f"{row['step']:<30}{row['seconds']:>9.2f}{row['queries']:>9}{row['created']:>9}"
                     f"{row['updated']:>9}{row['deactivated']:>9}{row['added']:>10}{row['removed']:>10}")
    lines += [
        f"churn applied in the directory: {churned['renamed']} renamed, {churned['moved']} moved to another "
        f"group, {churned['deleted']} deleted",
        "",
        f"{'login (POST /login/)':<44}{'n':>4}{'median ms':>11}{'p95 ms':>9}{'max ms':>9}",
    ]
    labels = {"directory": "directory account (bind, search, groups)",
              "local": "local account (PBKDF2, Django's default)"}
    for kind, figures in logins.items():
        lines.append(f"{labels[kind]:<44}{figures['n']:>4}{figures['median_ms']:>11.1f}{figures['p95_ms']:>9.1f}"
                     f"{figures['max_ms']:>9.1f}")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()

    def terminate(_signum, _frame):
        raise KeyboardInterrupt  # so the finally below stops slapd and removes the files

    signal.signal(signal.SIGTERM, terminate)
    sys.path.insert(0, str(ROOT))
    from tests.support.slapd import Slapd

    var_dir = Path(tempfile.mkdtemp(prefix="vdibench-ldap-"))
    slapd = Slapd(var_dir / "slapd")
    rng = random.Random(20251126)
    flush = False
    try:
        progress(f"generating {args.users} users in {args.groups} groups")
        ldif, memberships, groups_of = generate_ldif(args.users, args.groups, rng)
        started = time.perf_counter()
        slapd.start(ldif)
        progress(f"slapd loaded (slapadd -q) and listening in {time.perf_counter() - started:.1f} s on {slapd.uri}")
        configure_environment(args, var_dir, slapd)

        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth.models import Group
        from django.core.management import call_command

        from broker.models import Entitlement, GoldenImage, GoldenImageVersion, Pool

        call_command("migrate", verbosity=0, interactive=False)
        if args.database_url:
            if Group.objects.exists() or Pool.objects.exists():
                raise SystemExit("--database-url must name an empty database")
            flush = True
        database = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]

        image = GoldenImage.objects.create(name="bench-ldap", display_name="Bench")
        GoldenImageVersion.objects.create(image=image, number=1, path="/var/lib/vdi/images/bench.qcow2")
        pool = Pool.objects.create(name="bench-ldap", display_name="Bench", image=image)

        rows: list = []
        timed_read(rows)
        timed_sync("mirror (nothing entitled)", rows)
        Entitlement.objects.bulk_create([Entitlement(pool=pool, group=group) for group in Group.objects.all()])
        timed_sync("full (every group entitled)", rows)
        timed_sync("no-change re-sync", rows)
        churned = churn(slapd, args.users, args.groups, groups_of, rng)
        timed_sync("churn re-sync", rows)
        logins = time_logins(args.logins)

        summary = {
            "users": args.users, "groups": args.groups, "memberships": memberships, "database": database,
            **{f"{key}_s": row["seconds"] for key, row in zip(
                ["read", "mirror", "full_sync", "resync", "churn_resync"], rows)},
            "full_sync_queries": rows[2]["queries"], "resync_queries": rows[3]["queries"],
            "ldap_login_median_ms": logins["directory"]["median_ms"],
            "ldap_login_p95_ms": logins["directory"]["p95_ms"],
            "local_login_median_ms": logins["local"]["median_ms"],
            "local_login_p95_ms": logins["local"]["p95_ms"],
        }
        print(render(args, rows, logins, memberships, churned, database))
        print(json.dumps(summary))
        return 0
    finally:
        slapd.stop()
        if flush:
            from django.core.management import call_command

            call_command("flush", verbosity=0, interactive=False)
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
