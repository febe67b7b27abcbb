"""The state directory: what the session agent wrote down about each session it started, so
that an agent that restarted finds the sessions still running (and the processes of each).

    {state_dir}/                    root, 0711
      .lock-{account}               flock: one start/end at a time per account
      {session_name}/               root, 0711
        session.json                root, 0644: the SessionRecord
        private/                    the account, 0700: what the session's processes read
          vncpasswd  Xauthority  xvnc.log  session.log  openbox-rc.xml

Nothing secret is readable outside `private/`; `private/` is readable by its owner only,
so another employee on the host learns neither the VNC password nor the X cookie.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field

from broker.sessionhost.errors import SessionHostError

DEFAULT_STATE_DIR = "/var/lib/vdi/sessions"
SESSION_FILE = "session.json"
PRIVATE_DIR = "private"
_VALID_SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LOCK_TIMEOUT_S = 60


def check_session_name(session_name: str) -> None:
    # The name is a directory name and Xvnc's desktop name: no "/", no "..", no leading dot.
    if not _VALID_SESSION_NAME.match(session_name):
        raise ValueError(f"session name {session_name!r} must match {_VALID_SESSION_NAME.pattern}")


@dataclass
class SessionRecord:
    session_name: str
    account: str
    uid: int
    gid: int
    home: str
    kind: str
    display: int
    port: int
    listen_address: str
    started_at: str  # ISO 8601, UTC
    instance: str  # random per start: tells this session from a later one of the same name
    xvnc_pid: int = 0
    xvnc_start_ticks: int = 0
    # role -> pid of every process we started; each was started in its own process session,
    # so these are also the session ids that whatever they start inherits.
    pids: dict[str, int] = field(default_factory=dict)


def prepare_state_dir(state_dir: str) -> None:
    os.makedirs(state_dir, mode=0o711, exist_ok=True)
    os.chown(state_dir, 0, 0)
    # 0711: accounts may traverse it (Xvnc opens its files under private/) but not list it.
    os.chmod(state_dir, 0o711)
    # The base directory of every host's state (VDI_SESSION_STATE_DIR) as well: makedirs' modes
    # pass through the umask, and under `make run`'s 077 it came out 0700, where no account
    # could reach its files (xauth then waits on its lock until it times out).
    parent = os.path.dirname(os.path.abspath(state_dir))
    mode = os.stat(parent).st_mode & 0o7777
    if mode & 0o011 != 0o011:
        os.chmod(parent, mode | 0o011)


def session_dir(state_dir: str, session_name: str) -> str:
    check_session_name(session_name)
    return os.path.join(state_dir, session_name)


def private_dir(state_dir: str, session_name: str) -> str:
    return os.path.join(session_dir(state_dir, session_name), PRIVATE_DIR)


LOG_FILES = ("xvnc.log", "session.log")


def create_session_dirs(state_dir: str, session_name: str, *, uid: int, gid: int) -> tuple[str, dict[str, int]]:
    """A fresh session directory; returns its private subdirectory and open log files.

    The logs are created and opened while `private/` still belongs to root, and handed to the
    processes as open descriptors: once the account owns the directory it could put a symlink
    where a log should be, and root must never open a path the account controls.
    """
    directory = session_dir(state_dir, session_name)
    shutil.rmtree(directory, ignore_errors=True)
    os.mkdir(directory, 0o711)
    os.chmod(directory, 0o711)
    private = os.path.join(directory, PRIVATE_DIR)
    os.mkdir(private, 0o700)
    logs = {}
    try:
        for name in LOG_FILES:
            fd = os.open(os.path.join(private, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            logs[name] = fd
            os.fchown(fd, uid, gid)
        os.chown(private, uid, gid)
        os.chmod(private, 0o700)
    except BaseException:
        for fd in logs.values():
            os.close(fd)
        raise
    return private, logs


def remove_session_dir(state_dir: str, session_name: str) -> None:
    shutil.rmtree(session_dir(state_dir, session_name), ignore_errors=True)


def write_record(state_dir: str, record: SessionRecord) -> None:
    directory = session_dir(state_dir, record.session_name)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".session-")
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        json.dump(asdict(record), stream, indent=2, sort_keys=True)
        os.fchmod(stream.fileno(), 0o644)
    os.replace(temporary, os.path.join(directory, SESSION_FILE))


def read_record(state_dir: str, session_name: str) -> SessionRecord | None:
    try:
        with open(os.path.join(session_dir(state_dir, session_name), SESSION_FILE), encoding="utf-8") as stream:
            return SessionRecord(**json.load(stream))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise SessionHostError(f"{state_dir}/{session_name}/{SESSION_FILE} is unreadable ({exc}): "
                               f"end the session's processes by hand and delete the directory") from exc


def read_all_records(state_dir: str) -> list[SessionRecord]:
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        if _VALID_SESSION_NAME.match(name):
            record = read_record(state_dir, name)
            if record is not None:  # a directory being created or removed right now
                records.append(record)
    return records


@contextlib.contextmanager
def account_lock(state_dir: str, account: str):
    """One start or end at a time per account: ending an account's last session kills all its
    processes, which must not hit a session of the same account being started meanwhile.
    An flock, so the process that dies holding it releases it."""
    fd = os.open(os.path.join(state_dir, f".lock-{account}"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SessionHostError(f"another operation on account {account}'s sessions has held "
                                           f"{state_dir}/.lock-{account} for {LOCK_TIMEOUT_S} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)

