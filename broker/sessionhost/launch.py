"""Starting a session's processes as its account: Xvnc on a free display, then the desktop
(icewm + xterm) or the application under openbox, each in a new process session (setsid) so
that it outlives the agent, and each tagged VDI_SESSION so that ending the session finds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from broker.sessionhost import displays, procfs, records
from broker.sessionhost.errors import SessionHostError
from broker.sessionhost.files import write_private_file
from broker.sessionhost.records import SessionRecord

DISPLAY_CHOICE_LOCK = "/run/vdi-display-choice.lock"

DESKTOP = "desktop"
APP = "app"

XVNC_READY_TIMEOUT_S = 10
WINDOW_MANAGER_TIMEOUT_S = 10
MAX_DISPLAY_ATTEMPTS = 10
COMMAND_TIMEOUT_S = 10
SESSION_TAG = "VDI_SESSION"  # "{session_name}/{instance}" in every process of the session
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])  # where `broker` can be imported from

# The session's main program runs under this root shell: the icewm of a desktop (its "Log
# out" ends the session, as on any X desktop) or the application of an app session. When it
# exits, for any reason, the shell runs the same end_session as a log-off, so the session
# never outlives its program, even while the agent is down. Root, so that the employee cannot
# kill the supervisor and keep an orphaned display; a shell, because it only waits (a few
# hundred KiB, where a Python supervisor would cost ~10 MB per session).
_SUPERVISOR_SCRIPT = """
setpriv --reuid="$VDI_UID" --regid="$VDI_GID" --init-groups -- env -i "$@"
exec "$VDI_PYTHON" -m broker.sessionhost.session_exit "$VDI_STATE_DIR" "$VDI_SESSION_NAME" "$VDI_INSTANCE"
"""

# App sessions: openbox shows every application window maximized and without decorations
# (the application is the whole desktop). The file binds no keys or mouse buttons, so there
# is no root menu to start anything else from. Dialogs (window type other than "normal")
# keep their size and title bar so that they still look and close like dialogs.
_OPENBOX_RC = b"""<?xml version="1.0" encoding="UTF-8"?>
<openbox_config xmlns="http://openbox.org/3.4/rc">
  <desktops><number>1</number></desktops>
  <applications>
    <application class="*" type="normal">
      <maximized>yes</maximized>
      <decor>no</decor>
      <focus>yes</focus>
    </application>
  </applications>
</openbox_config>
"""

# The agent is these processes' parent until it restarts; poll them so that a session's
# ended processes do not linger as zombies (and so Popen does not warn about them).
_children: dict[int, subprocess.Popen] = {}


def reap_children() -> None:
    for pid, child in list(_children.items()):
        if child.poll() is not None:
            del _children[pid]


def require(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise SessionHostError(f"{program} is not installed: apt-get install {package}")
    return path


def log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - 4096))
            text = stream.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(text.strip().splitlines()[-lines:])


def session_tag(record: SessionRecord) -> str:
    return f"{record.session_name}/{record.instance}"


def account_environment(record: SessionRecord, private: str) -> dict[str, str]:
    """A login-like environment built from scratch: nothing of the agent's (root's) leaks."""
    return {
        "HOME": record.home, "USER": record.account, "LOGNAME": record.account, "SHELL": "/bin/bash",
        "PATH": USER_PATH, "LANG": "C.UTF-8", "DISPLAY": f":{record.display}",
        "XAUTHORITY": os.path.join(private, "Xauthority"), SESSION_TAG: session_tag(record),
    }


def as_account(record: SessionRecord) -> list[str]:
    # setpriv execs the program in place (the pid we get is the program's) and sets the
    # account's supplementary groups. No PAM session: no logind seat, no XDG_RUNTIME_DIR.
    return ["setpriv", f"--reuid={record.uid}", f"--regid={record.gid}", "--init-groups", "--"]


def _spawn(argv: list[str], *, record: SessionRecord, env: dict[str, str], log_fd: int) -> subprocess.Popen:
    try:
        child = subprocess.Popen(argv, env=env, cwd=record.home, stdin=subprocess.DEVNULL, stdout=log_fd,
                                 stderr=log_fd, close_fds=True, start_new_session=True,
                                 umask=0o077)  # a shared host: new files private by default
    except OSError as exc:
        raise SessionHostError(f"could not start {argv[0]} for session {record.session_name}: {exc}") from exc
    _children[child.pid] = child
    return child


def _write_xauthority(record: SessionRecord, private: str) -> None:
    """A fresh MIT cookie for the display, in a file only the account can read: without it no
    other user (not even root's own clients) may connect to the X display.

    The cookie goes to xauth on stdin: on a command line every user on the host could read it
    in /proc while xauth runs."""
    path = os.path.join(private, "Xauthority")
    try:
        os.unlink(path)  # a previous display attempt's entry
    except FileNotFoundError:
        pass
    command = f"add :{record.display} . {secrets.token_hex(16)}\n"
    try:
        result = subprocess.run([*as_account(record), "xauth", "-q", "-f", path, "source", "-"], input=command,
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
                                env={"PATH": USER_PATH, "HOME": record.home}, cwd=private)
    except subprocess.TimeoutExpired as exc:
        raise SessionHostError(f"xauth did not finish within {COMMAND_TIMEOUT_S} s") from exc
    if result.returncode != 0 or not os.path.exists(path):
        raise SessionHostError(f"xauth could not write {path} (exit {result.returncode}): {result.stderr.strip()}")


def _xvnc_argv(record: SessionRecord, private: str, *, geometry: str, depth: int) -> list[str]:
    if record.listen_address in ("127.0.0.1", "::1"):
        listen = ["-localhost=1"]
    else:
        listen = ["-localhost=0", "-interface", record.listen_address]
    return [
        "Xvnc", f":{record.display}", "-rfbport", str(record.port),
        "-SecurityTypes", "VncAuth", "-PasswordFile", os.path.join(private, "vncpasswd"),
        "-auth", os.path.join(private, "Xauthority"),
        "-geometry", geometry, "-depth", str(depth), "-desktop", record.session_name,
        "-nolisten", "tcp",  # X clients only through the local socket, behind the cookie
        # Every console shares the display: a second console (the employee's other browser)
        # or a reconnect joins instead of being refused or kicking the first one off.
        "-AlwaysShared", "-DisconnectClients=0",
        # TigerVNC blacklists an address for 10 s (then longer) after 5 failed logins. All
        # consoles come from the gateway's one address, and any employee on the host can fail
        # logins on 127.0.0.1 on purpose: the blacklist would lock out the rightful owner.
        # The broker's random one-time passwords are what resists guessing.
        "-UseBlacklist=0",
        *listen,
    ]


def start_xvnc(record: SessionRecord, private: str, log_fd: int, *, geometry: str, depth: int,
               state_dir: str) -> None:
    """Start Xvnc on the first free display that works and wait for its RFB banner; fills in
    the record's display, port and pid."""
    log_path = os.path.join(private, "xvnc.log")
    tried: set[int] = set()
    for _attempt in range(MAX_DISPLAY_ATTEMPTS):
        # One Xvnc at a time on this machine goes from "display chosen" to "answering" (about
        # 0.07 s): the next start then sees its socket and port taken. Without this, two logons
        # at once picked the same free display, and the second took the first one's RFB banner
        # for its own. Machine-wide: several agents may share a machine (tests, demos).
        with _display_choice_lock():
            reserved = tried | {other.display for other in records.read_all_records(state_dir)}
            free = displays.candidate_displays(reserved=reserved)
            if not free:
                break
            display = free[0]
            tried.add(display)
            record.display, record.port = display, displays.rfb_port(display)
            _write_xauthority(record, private)
            env = account_environment(record, private)
            xvnc = _spawn([*as_account(record), *_xvnc_argv(record, private, geometry=geometry, depth=depth)],
                          record=record, env=env, log_fd=log_fd)
            record.xvnc_pid = xvnc.pid
            record.xvnc_start_ticks = procfs.read_proc(xvnc.pid).start_ticks  # our unreaped child: still there
            record.pids = {"xvnc": xvnc.pid}
            records.write_record(state_dir, record)  # from here on end_session can clean up after us
            try:
                ready = displays.wait_for_rfb(displays.connect_address(record.listen_address), record.port,
                                              process=xvnc, timeout_s=XVNC_READY_TIMEOUT_S)
            except TimeoutError:
                raise SessionHostError(f"Xvnc :{display} did not answer on port {record.port} within "
                                       f"{XVNC_READY_TIMEOUT_S} s; its log:\n{log_tail(log_path)}") from None
        if ready and xvnc.poll() is None:  # the banner came from our own Xvnc, still running
            return
        log = log_tail(log_path)
        # Someone else's server took the display or the port between our check and Xvnc's bind.
        if "already active for display" in log or "Address already in use" in log:
            continue
        raise SessionHostError(f"Xvnc :{display} exited at start (exit {xvnc.returncode}); its log:\n{log}")
    raise SessionHostError(f"no free X display: tried {MAX_DISPLAY_ATTEMPTS} between "
                           f":{displays.FIRST_DISPLAY} and :{displays.LAST_DISPLAY}")


@contextlib.contextmanager
def _display_choice_lock():
    """Machine-wide (several agents may share a machine), in a root-only directory."""
    with open(DISPLAY_CHOICE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_supervised(main: list[str], record: SessionRecord, private: str, log_fd: int, state_dir: str) -> None:
    env = account_environment(record, private)
    supervisor_env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": _PROJECT_ROOT, "VDI_PYTHON": sys.executable,
        "VDI_UID": str(record.uid), "VDI_GID": str(record.gid), "VDI_STATE_DIR": os.path.abspath(state_dir),
        "VDI_SESSION_NAME": record.session_name, "VDI_INSTANCE": record.instance, SESSION_TAG: session_tag(record),
    }
    child = _spawn(["/bin/sh", "-c", _SUPERVISOR_SCRIPT, "vdi-session-supervisor",
                    *(f"{name}={value}" for name, value in env.items()), *main],
                   record=record, env=supervisor_env, log_fd=log_fd)
    record.pids["supervisor"] = child.pid


def _wait_for_window_manager(record: SessionRecord, private: str) -> None:
    """Return once a window manager manages the display.

    A window mapped before the window manager took the screen over stays unmanaged: in an app
    session the application would show at its own size, with no WM ever maximizing it. A WM
    sets _NET_SUPPORTING_WM_CHECK on the root window once it redirects new windows to itself.
    """
    argv = [*as_account(record), require("xprop", "x11-utils"), "-root", "-notype", "_NET_SUPPORTING_WM_CHECK"]
    deadline = time.monotonic() + WINDOW_MANAGER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
                                    env=account_environment(record, private), cwd=record.home)
        except subprocess.TimeoutExpired:
            continue
        if "window id #" in result.stdout:
            return
        time.sleep(0.01)  # a logon waits on this: poll often (xprop costs about 5 ms)
    raise SessionHostError(f"the window manager of session {record.session_name} did not start within "
                           f"{WINDOW_MANAGER_TIMEOUT_S} s; its log:\n{log_tail(os.path.join(private, 'session.log'))}")


def start_programs(record: SessionRecord, private: str, log_fd: int, command: list[str] | None,
                   state_dir: str) -> None:
    """The desktop (icewm, then an xterm) or the application under openbox."""
    env = account_environment(record, private)
    if record.kind == DESKTOP:
        _start_supervised([require("icewm", "icewm")], record, private, log_fd, state_dir)
        _wait_for_window_manager(record, private)
        record.pids["xterm"] = _spawn([*as_account(record), require("xterm", "xterm")], record=record, env=env,
                                      log_fd=log_fd).pid
    else:
        rc = os.path.join(private, "openbox-rc.xml")
        write_private_file(rc, _OPENBOX_RC, uid=record.uid, gid=record.gid)
        record.pids["window_manager"] = _spawn([*as_account(record), require("openbox", "openbox"),
                                                "--config-file", rc], record=record, env=env, log_fd=log_fd).pid
        _wait_for_window_manager(record, private)
        _start_supervised(command, record, private, log_fd, state_dir)


def resolve_command(command: list[str] | None) -> list[str]:
    if not command or not command[0]:
        raise ValueError("an app session needs a command")
    program = shutil.which(command[0], path=USER_PATH)
    if program is None:
        raise SessionHostError(f"application {command[0]!r} is not installed on this host (searched {USER_PATH})")
    # An absolute path: env(1) in the supervisor must not read "a=b" or "-x" as its own.
    return [os.path.abspath(program), *command[1:]]
