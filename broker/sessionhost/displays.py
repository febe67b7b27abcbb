"""X display numbers and their VNC ports on a session host.

Display :N listens on RFB port 5900 + N. Numbers start at 200 so that a desktop someone runs
by hand on the host (:0, :1...) never collides with ours.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time

FIRST_DISPLAY = 200
LAST_DISPLAY = 699  # port 6599; a host will run out of memory long before
RFB_BASE_PORT = 5900
X_SOCKET_DIR = "/tmp/.X11-unix"


def rfb_port(display: int) -> int:
    return RFB_BASE_PORT + display


def ensure_x_socket_dir() -> None:
    """/tmp/.X11-unix must exist, root-owned, mode 1777, before an unprivileged X server starts.

    Xvnc running as an employee creates the directory itself if it is missing, owned by that
    employee: the owner of a sticky directory may delete anyone's socket in it, so the first
    employee of the day could cut every later session off its own display.
    """
    try:
        os.mkdir(X_SOCKET_DIR, 0o1777)
    except FileExistsError:
        pass
    info = os.lstat(X_SOCKET_DIR)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(f"{X_SOCKET_DIR} is not a directory")
    if info.st_uid != 0:
        os.chown(X_SOCKET_DIR, 0, 0)
    os.chmod(X_SOCKET_DIR, 0o1777)  # mkdir's mode is filtered by the umask


def _abstract_x_sockets() -> set[str]:
    # Linux X servers also listen on an abstract socket "@/tmp/.X11-unix/XN", which outlives
    # a deleted /tmp file: a display is only free when neither exists.
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as stream:
            return {line.split()[-1] for line in stream if line.rstrip().endswith(tuple("0123456789"))}
    except OSError:
        return set()


def _listening_tcp_ports() -> set[int]:
    # Another program on a display's port would answer our readiness probe in Xvnc's stead
    # (and Xvnc would fail to bind): skip such displays up front.
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii", errors="replace") as stream:
                next(stream, None)
                for line in stream:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def display_in_use(display: int, *, abstract_sockets: set[str], listening_ports: set[int]) -> bool:
    return (os.path.lexists(f"{X_SOCKET_DIR}/X{display}")
            or os.path.lexists(f"/tmp/.X{display}-lock")
            or f"@{X_SOCKET_DIR}/X{display}" in abstract_sockets
            or rfb_port(display) in listening_ports)


def candidate_displays(*, reserved: set[int]) -> list[int]:
    """Free display numbers, lowest first; `reserved` are those our own records already hold
    (a session being started has no lock file yet)."""
    abstract_sockets, listening_ports = _abstract_x_sockets(), _listening_tcp_ports()
    return [n for n in range(FIRST_DISPLAY, LAST_DISPLAY + 1)
            if n not in reserved
            and not display_in_use(n, abstract_sockets=abstract_sockets, listening_ports=listening_ports)]


def remove_stale_display_files(display: int, *, server_pid: int) -> None:
    """Delete the lock file and socket an X server killed with SIGKILL left behind, so that the
    number can be used again. Only when the lock names that dead server."""
    lock = f"/tmp/.X{display}-lock"
    try:
        with open(lock, encoding="ascii", errors="replace") as stream:
            owner = int(stream.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return
    if owner != server_pid:
        return
    for path in (lock, f"{X_SOCKET_DIR}/X{display}"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def connect_address(listen_address: str) -> str:
    """Where to reach a server listening on `listen_address` from this host."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen_address, listen_address)


def wait_for_rfb(address: str, port: int, *, process: subprocess.Popen, timeout_s: float) -> bool:
    """True once the port greets with an RFB banner; False if `process` exited first.

    Raises TimeoutError when neither happened within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=1) as connection:
                connection.settimeout(max(0.5, deadline - time.monotonic()))
                if connection.recv(12).startswith(b"RFB "):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError
