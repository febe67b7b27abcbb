"""Shared desktop sessions on a Linux session host: one TigerVNC Xvnc display per session,
running either a desktop (icewm + xterm) or one published application, as the employee's own
OS account.

The session agent calls these functions; everything it needs to find a session again after a
restart is in the state directory (records.py). How the processes are started is launch.py;
here is what a session is, and the start, end and inspection of one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass

from broker.sessionhost import displays, launch, procfs, records
from broker.sessionhost.accounts import Account, kill_account_processes, lookup_account
from broker.sessionhost.errors import SessionHostError
from broker.sessionhost.launch import APP, DESKTOP, SESSION_TAG
from broker.sessionhost.records import DEFAULT_STATE_DIR, SessionRecord
from broker.sessionhost.vncpasswd import obfuscate_vnc_password, write_vnc_password_file

KINDS = (DESKTOP, APP)
_GEOMETRY = re.compile(r"^[1-9][0-9]{2,4}x[1-9][0-9]{2,4}$")


@dataclass(frozen=True)
class SessionInfo:
    session_name: str
    account: str
    display: int
    port: int
    kind: str
    xvnc_pid: int
    started_at: datetime.datetime
    alive: bool


@dataclass(frozen=True)
class HostLoad:
    sessions: int
    cpus: int
    load1: float
    memory_total_mib: int
    memory_available_mib: int


def _info(record: SessionRecord) -> SessionInfo:
    return SessionInfo(session_name=record.session_name, account=record.account, display=record.display,
                       port=record.port, kind=record.kind, xvnc_pid=record.xvnc_pid,
                       started_at=datetime.datetime.fromisoformat(record.started_at), alive=_xvnc_alive(record))


def _xvnc_alive(record: SessionRecord) -> bool:
    """The recorded Xvnc still runs: same pid, same start time, same owner, same display (a
    recycled pid fails at least one of these)."""
    if not record.xvnc_pid:
        return False
    proc = procfs.read_proc(record.xvnc_pid)
    if proc is None or not proc.running or not proc.owned_by(record.uid):
        return False
    if proc.start_ticks != record.xvnc_start_ticks:
        return False
    argv = procfs.command_line(record.xvnc_pid)
    return len(argv) >= 2 and os.path.basename(argv[0]) == "Xvnc" and argv[1] == f":{record.display}"


def _is_in_session(proc: procfs.Proc, record: SessionRecord) -> bool:
    """Started by this session: it carries the session's tag, or (a process that cleared its
    environment) it lives in a process session we started. A process tagged for another
    session never counts, even if its session id is a recycled pid of ours."""
    tag = procfs.environment_value(proc.pid, SESSION_TAG)
    if tag is not None:
        return tag == launch.session_tag(record)
    return proc.sid in record.pids.values()


def _account_processes_of(record: SessionRecord):
    return lambda proc: proc.owned_by(record.uid) and _is_in_session(proc, record)


def _check_arguments(*, session_name: str, kind: str, listen_address: str, geometry: str, depth: int,
                     password: str) -> None:
    records.check_session_name(session_name)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    ipaddress.ip_address(listen_address)  # ValueError on anything but an IP address
    if not _GEOMETRY.match(geometry):
        raise ValueError(f"geometry must look like 1280x800, not {geometry!r}")
    if depth not in (16, 24, 32):
        raise ValueError(f"depth must be 16, 24 or 32, not {depth}")
    obfuscate_vnc_password(password)  # ValueError on a password VNC cannot carry


def start_session(*, session_name: str, account: Account, kind: str, command: list[str] | None, password: str,
                  listen_address: str = "127.0.0.1", geometry: str = "1280x800", depth: int = 24,
                  state_dir: str = DEFAULT_STATE_DIR) -> SessionInfo:
    """Start the session (Xvnc, then the desktop or the application) and return once its VNC
    port answers. Idempotent: a session of that name that still runs is returned as it is,
    with `password` as its new VNC password."""
    _check_arguments(session_name=session_name, kind=kind, listen_address=listen_address, geometry=geometry,
                     depth=depth, password=password)
    if os.geteuid() != 0:
        raise SessionHostError("the session agent must run as root: it starts processes as the employees' accounts")
    if kind == APP:
        command = launch.resolve_command(command)
    for program, package in (("Xvnc", "tigervnc-standalone-server"), ("xauth", "xauth"), ("setpriv", "util-linux")):
        launch.require(program, package)
    records.prepare_state_dir(state_dir)
    displays.ensure_x_socket_dir()
    with records.account_lock(state_dir, account.name):
        existing = records.read_record(state_dir, session_name)
        if existing is not None:
            if existing.account != account.name:
                raise SessionHostError(f"session {session_name} already exists for account {existing.account}")
            if _xvnc_alive(existing):
                write_vnc_password_file(os.path.join(records.private_dir(state_dir, session_name), "vncpasswd"),
                                        password, uid=existing.uid, gid=existing.gid)
                return _info(existing)
            _end_locked(existing, state_dir)  # its Xvnc died: clear what is left, start afresh
        record = SessionRecord(
            session_name=session_name, account=account.name, uid=account.uid, gid=account.gid, home=account.home,
            kind=kind, display=0, port=0, listen_address=listen_address,
            started_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            instance=secrets.token_hex(8),
        )
        private, logs = records.create_session_dirs(state_dir, session_name, uid=account.uid, gid=account.gid)
        try:
            write_vnc_password_file(os.path.join(private, "vncpasswd"), password, uid=account.uid, gid=account.gid)
            launch.start_xvnc(record, private, logs["xvnc.log"], geometry=geometry, depth=depth, state_dir=state_dir)
            launch.start_programs(record, private, logs["session.log"], command, state_dir)
            records.write_record(state_dir, record)
        except BaseException as failure:
            try:
                _end_locked(record, state_dir)
            except SessionHostError as cleanup_failure:
                failure.add_note(f"cleaning up after it: {cleanup_failure}")
            raise
        finally:
            for fd in logs.values():
                os.close(fd)
        return _info(record)


def expire_session_password(*, session_name: str, digest: str, state_dir: str = DEFAULT_STATE_DIR) -> bool:
    """Replace the session's password with a random one nobody knows, if the file still holds
    the password whose password_file_digest() is `digest` (a newer ticket's is left alone).
    Consoles already open stay. True if it was replaced."""
    import hashlib

    record = records.read_record(state_dir, session_name)
    if record is None:
        return False
    path = os.path.join(records.private_dir(state_dir, session_name), "vncpasswd")
    with records.account_lock(state_dir, record.account):
        try:
            with open(path, "rb") as stream:
                current = hashlib.sha256(stream.read()).hexdigest()
        except FileNotFoundError:
            return False
        if current != digest:
            return False
        write_vnc_password_file(path, secrets.token_urlsafe(8)[:8], uid=record.uid, gid=record.gid)
        return True


def set_session_password(*, session_name: str, password: str, state_dir: str = DEFAULT_STATE_DIR) -> None:
    """The VNC password for the next console; consoles already connected stay connected."""
    record = records.read_record(state_dir, session_name)
    if record is None:
        raise SessionHostError(f"there is no session {session_name} on this host")
    try:
        write_vnc_password_file(os.path.join(records.private_dir(state_dir, session_name), "vncpasswd"), password,
                                uid=record.uid, gid=record.gid)
    except FileNotFoundError:
        raise SessionHostError(f"session {session_name} ended meanwhile") from None


def _end_locked(record: SessionRecord, state_dir: str) -> None:
    """End every process of the session; if it was the account's last session, every process
    of the account ("log off leaves nothing behind"). Call with the account lock held."""
    survivors = procfs.terminate(_account_processes_of(record), grace_s=2.0, reap=launch.reap_children)
    if record.display:
        displays.remove_stale_display_files(record.display, server_pid=record.xvnc_pid)
    others = [other for other in records.read_all_records(state_dir)
              if other.account == record.account and other.session_name != record.session_name and _xvnc_alive(other)]
    if not others and not survivors:
        account = lookup_account(record.account)
        if account is not None and account.uid == record.uid:
            kill_account_processes(account)
    launch.reap_children()
    records.remove_session_dir(state_dir, record.session_name)
    if survivors:
        raise SessionHostError(f"processes {survivors} of session {record.session_name} survived SIGKILL")


def end_session_instance(*, session_name: str, instance: str | None, state_dir: str = DEFAULT_STATE_DIR) -> None:
    """end_session, but only if the session is still the start `instance` (None: any)."""
    record = records.read_record(state_dir, session_name)
    if record is None:
        return
    with records.account_lock(state_dir, record.account):
        record = records.read_record(state_dir, session_name)  # it may have ended while we waited
        if record is not None and instance in (None, record.instance):
            _end_locked(record, state_dir)


def end_session(*, session_name: str, state_dir: str = DEFAULT_STATE_DIR) -> None:
    """End the session and all its processes; ending a session that is gone is fine. The
    account's home stays."""
    end_session_instance(session_name=session_name, instance=None, state_dir=state_dir)


def list_sessions(state_dir: str = DEFAULT_STATE_DIR) -> list[SessionInfo]:
    """Every session in the state directory; `alive` says whether its Xvnc still runs."""
    launch.reap_children()
    return [_info(record) for record in records.read_all_records(state_dir)]


def _meminfo_kib() -> dict[str, int]:
    values = {}
    with open("/proc/meminfo", encoding="ascii") as stream:
        for line in stream:
            name, _, rest = line.partition(":")
            values[name] = int(rest.split()[0])
    return values


def host_load(state_dir: str = DEFAULT_STATE_DIR) -> HostLoad:
    meminfo = _meminfo_kib()
    return HostLoad(sessions=sum(1 for session in list_sessions(state_dir) if session.alive),
                    cpus=os.cpu_count() or 1, load1=os.getloadavg()[0],
                    memory_total_mib=meminfo["MemTotal"] // 1024,
                    memory_available_mib=meminfo["MemAvailable"] // 1024)


def session_pss_mib(session_name: str, state_dir: str = DEFAULT_STATE_DIR) -> float:
    """Memory the session costs the host: PSS of all its processes, the root supervisor too."""
    record = records.read_record(state_dir, session_name)
    if record is None:
        raise SessionHostError(f"there is no session {session_name} on this host")
    in_session = _account_processes_of(record)
    total_kib = sum(procfs.pss_kib(proc.pid) for proc in procfs.running_processes(
        lambda proc: in_session(proc) or procfs.environment_value(proc.pid, SESSION_TAG) == launch.session_tag(record)))
    return total_kib / 1024
