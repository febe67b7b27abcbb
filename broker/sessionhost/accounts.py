"""The OS accounts employees' sessions run under: one per employee and host, made on demand.

Each employee gets a real Unix account so that the kernel, not the broker, keeps one
employee's files, processes and X display away from another's on a shared session host.
The accounts have no password (useradd leaves it locked): nobody logs in to them directly;
the session agent starts processes as them.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass

from broker.sessionhost import procfs
from broker.sessionhost.errors import SessionHostError

MAX_NAME_LENGTH = 32  # useradd's limit on Debian
_VALID_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")
_NOT_NAME_CHARACTER = re.compile(r"[^a-z0-9_-]")
# Below this uid live root and the system accounts: a session must never run as one of them.
FIRST_SESSION_UID = 1000
COMMAND_TIMEOUT_S = 60
# World-writable directories where an account's leftovers survive userdel.
SHARED_TEMPORARY_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
# Shared by every user; should an account own one (its X server made it), it must stay.
_SYSTEM_ENTRIES = {".X11-unix", ".ICE-unix", ".XIM-unix", ".font-unix", ".Test-unix"}


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def account_name(*, prefix: str, user_id: int, username: str) -> str:
    """The account name of broker user `user_id` on every host: `{prefix}{user_id}-{slug}`.

    Deterministic, so every host and every retry agree without storing it. The slug (the
    username lowercased, any other character replaced by "-") is there for the admin reading
    `ps`; it is cut to fit 32 characters. The user id alone makes the name unique, so two
    usernames that slug alike ("Ann.Lee", "ann_lee"... ) never share an account.
    """
    if not _VALID_NAME.match(prefix):
        raise ValueError(f"account prefix {prefix!r} must match {_VALID_NAME.pattern}")
    if user_id < 0:
        raise ValueError("user_id must not be negative")
    base = f"{prefix}{user_id}-"
    if len(base) >= MAX_NAME_LENGTH:
        raise ValueError(f"account prefix {prefix!r} leaves no room for user id {user_id} "
                         f"within {MAX_NAME_LENGTH} characters")
    slug = _NOT_NAME_CHARACTER.sub("-", username.lower())
    return (base + slug)[:MAX_NAME_LENGTH]


def lookup_account(name: str) -> Account | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


def _check_session_account(account: Account) -> Account:
    if account.uid < FIRST_SESSION_UID:
        raise SessionHostError(f"account {account.name} has uid {account.uid}, a system account: "
                               f"sessions only run as accounts with uid >= {FIRST_SESSION_UID}")
    return account


def _run(argv: list[str], *, what: str) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise SessionHostError(f"{argv[0]} is missing: apt-get install passwd") from exc
    except subprocess.TimeoutExpired as exc:
        raise SessionHostError(f"{what}: {argv[0]} did not finish within {COMMAND_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        raise SessionHostError(f"{what}: {argv[0]} exited {result.returncode}: {result.stderr.strip()}")


def _secure_home(account: Account) -> None:
    """Home 0700 and owned by the account: other employees on the host must not read it."""
    os.makedirs(account.home, mode=0o700, exist_ok=True)
    os.chown(account.home, account.uid, account.gid)
    os.chmod(account.home, 0o700)


def ensure_account(name: str, *, home_root: str = "/home") -> Account:
    """The account `name`, created (with its home, mode 0700) if it does not exist yet.

    Idempotent: an existing account keeps its uid and its home's contents.
    """
    if not _VALID_NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{name!r} is not a valid account name (see account_name)")
    account = lookup_account(name)
    if account is None:
        try:
            _run(["useradd", "--create-home", "--home-dir", os.path.join(home_root, name), "--shell", "/bin/bash",
                  "--user-group", "--comment", "VDI session account", name], what=f"creating account {name}")
        except SessionHostError:
            # Two agents' threads may create the same account at once: one wins, both are fine.
            if lookup_account(name) is None:
                raise
        account = lookup_account(name)
        if account is None:
            raise SessionHostError(f"useradd reported success but account {name} does not exist "
                                   f"(check /etc/nsswitch.conf)")
    _check_session_account(account)
    _secure_home(account)
    return account


def kill_account_processes(account: Account) -> None:
    """Every process running as the account, killed (SIGKILL, repeated until none is left)."""
    _check_session_account(account)
    left = procfs.terminate(lambda proc: proc.owned_by(account.uid), grace_s=0)
    if left:
        raise SessionHostError(f"processes {left} of account {account.name} survived SIGKILL (stuck in the kernel?)")


def _remove_files_in_shared_dirs(uid: int) -> None:
    """What the account left directly in /tmp and the like. userdel leaves it, and useradd
    hands the freed uid to the next account it creates, which would then own those files:
    one employee's temporary files given to another."""
    for directory in SHARED_TEMPORARY_DIRS:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name in _SYSTEM_ENTRIES:
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)  # does not follow symlinks out of the tree
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise SessionHostError(f"could not remove {entry.path}, left by the removed account "
                                       f"(uid {uid}): {exc}") from exc


def remove_account(name: str) -> None:
    """Kill the account's processes and delete it with its home and what it left in /tmp.
    A missing account is fine."""
    account = lookup_account(name)
    if account is None:
        return
    kill_account_processes(account)
    _remove_files_in_shared_dirs(account.uid)
    try:
        _run(["userdel", "--remove", name], what=f"removing account {name}")
    except SessionHostError:
        # userdel exits 12 when only the mail spool or home was already gone: the account is.
        if lookup_account(name) is not None:
            raise
