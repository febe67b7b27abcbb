"""`make run`'s SQLite database holds login sessions and console tickets: no other local user
may read it, its -wal/-shm files, the secret key or var/ itself."""

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from django.conf import settings


def access_of_group_and_others(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & 0o077


def test_the_sqlite_database_and_var_are_private_to_their_owner(tmp_path):
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SECRET_KEY")}
    env["VDI_VAR_DIR"] = str(var)
    # As `make run` did before it set a umask: the process's own umask lets everyone read.
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=settings.BASE_DIR,
                   env=env, umask=0o022, check=True, timeout=300)

    database = var / "vdi.sqlite3"
    with sqlite3.connect(database) as held_open:  # the WAL files exist while a connection is open
        held_open.execute("CREATE TABLE written_by_the_test (x)")
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm"), var / "secret_key"]
        assert all(f.exists() for f in files)
        assert {f.name: access_of_group_and_others(f) for f in [var, *files]} == {f.name: 0 for f in [var, *files]}
