"""var/ holds the SQLite database (sessions, console tickets), the secret key, logs and the
demo's passwords: no other local user may read any of it, whatever the process's umask."""

import os
from pathlib import Path


def make_private_dir(path: Path) -> None:
    """Create `path` (0700), or take group and others' access away from one we own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.geteuid():
        path.chmod(0o700)


def make_private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it: SQLite gives its -wal and -shm
    files the database file's mode. Files an older run left readable are tightened."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if name.exists() and name.stat().st_uid == os.geteuid():
            name.chmod(0o600)


def write_private_file(path: Path, text: str) -> None:
    """Write a new file that is 0600 from its first byte (no window before a chmod)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process starting at the same moment wrote it
        return
    with os.fdopen(fd, "w") as file:
        file.write(text)
