"""The two ways bench/sessions.py gets a shared session to its first frame, and the VNC viewer
both use.

  BrowserUser  an employee's browser: the portal's launch form, the desktop page, its launch
               progress websocket (polling /status/ every 400 ms only if that fails), the
               console ticket, the console websocket and noVNC's side of RFB.
  HandSession  an admin by hand: as root, a VNC password file and an X cookie, then
               `runuser -u ACCOUNT -- Xvnc ...`, icewm and xterm, and a VNC viewer.

Both stop the clock when the header of the first FramebufferUpdate arrives, after the same
opening noVNC makes (SetPixelFormat, SetEncodings, a full non-incremental update request).
Every time is perf_counter() seconds; phases are named in PHASES (sessions.py prints them).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from broker.console.rfb import vnc_auth_response
from broker.sessionhost import displays, procfs
from broker.sessionhost.vncpasswd import write_vnc_password_file

STATUS_POLL_S = 0.4  # console.js's fallback when the progress websocket fails
XVNC_READY_TIMEOUT_S = 10
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"  # root's PATH; the account's has no sbin


class LaunchFailed(Exception):
    pass


@dataclass
class Sample:
    """One launch or reconnect to its first frame; `phases` in seconds, in order."""

    who: str
    first_frame_s: float
    phases: dict[str, float] = field(default_factory=dict)
    desktop_id: int | None = None  # the broker's session row
    wall_ready: float = 0.0  # time.time() when the page learnt "ready", to split by the row's events
    progress_via: str = ""  # "websocket", or "polling" where the progress websocket failed


# -- the viewer: noVNC's side of RFB -------------------------------------------------------

# What noVNC 1.7 sends after ServerInit (core/rfb.js _negotiateServerInit): 32 bpp true colour,
# depth 24, little endian, then its encodings in preference order (no H.264: WebCodecs off).
_NOVNC_PIXEL_FORMAT = struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)
_NOVNC_ENCODINGS = [
    1, 7, -260, 16, 21, 5, 2, 6, 0,  # CopyRect Tight TightPNG ZRLE JPEG Hextile RRE Zlib Raw
    -32 + 6, -256 + 2,  # quality 6, compression 2
    -223, -224, -258, -261, -308, -309, -312, -313, -307, 0xC0A1E5CE, -316,  # pseudo-encodings
    0x574D5664, -239,  # VMware cursor, cursor
]
_SET_ENCODINGS = struct.pack(">BxH", 2, len(_NOVNC_ENCODINGS)) + b"".join(
    struct.pack(">I", e & 0xFFFFFFFF) for e in _NOVNC_ENCODINGS)


class _Stream:
    """Bytes in from a TCP socket or a websocket's binary messages; bytes out as one message.
    Waits in slices of at most SLICE_S, so that Ctrl+C (the `stop` event) is heard."""

    SLICE_S = 0.5

    def __init__(self, *, sock: socket.socket | None = None, ws=None, deadline: float, stop):
        self.sock, self.ws, self.deadline, self.stop, self.buffer = sock, ws, deadline, stop, b""

    def _slice(self) -> float:
        left = self.deadline - time.perf_counter()
        if left <= 0:
            raise LaunchFailed("timed out in the VNC opening")
        if self.stop.is_set():
            raise LaunchFailed("stopped")
        return min(left, self.SLICE_S)

    def _receive(self) -> bytes:
        while True:
            if self.ws is not None:
                try:
                    chunk = self.ws.recv(timeout=self._slice())
                except TimeoutError:
                    continue
                except WebSocketException as exc:
                    raise LaunchFailed(f"the console closed: {_close_of(self.ws, exc)}") from None
                if isinstance(chunk, bytes):
                    return chunk  # (a text frame is the page's ping/pong, never RFB)
            else:
                self.sock.settimeout(self._slice())
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    raise LaunchFailed("the VNC server closed the connection")
                return chunk

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._receive()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, data: bytes) -> None:
        if self.ws is not None:
            self.ws.send(data)
        else:
            self.sock.sendall(data)


def _close_of(ws, exc) -> str:
    close = getattr(ws, "close_rcvd", None)
    return f"{close.code} {close.reason}" if close is not None else str(exc)


def rfb_open(stream: _Stream, *, password: str | None) -> tuple[int, int]:
    """Version, security (None through the gateway, VNC authentication by hand), ClientInit
    (shared) and ServerInit; returns the screen size."""
    version = stream.read(12)
    if not version.startswith(b"RFB 003."):
        raise LaunchFailed(f"not an RFB server: {version!r}")
    stream.send(b"RFB 003.008\n")
    (count,) = stream.read(1)
    if count == 0:
        raise LaunchFailed(f"refused: {_reason(stream)}")
    offered = stream.read(count)
    wanted = 1 if password is None else 2
    if wanted not in offered:
        raise LaunchFailed(f"security type {wanted} not offered (offered {list(offered)})")
    stream.send(bytes([wanted]))
    if password is not None:
        stream.send(vnc_auth_response(password, stream.read(16)))
    if stream.read(4) != b"\0\0\0\0":
        raise LaunchFailed(f"VNC login refused: {_reason(stream)}")
    stream.send(b"\x01")  # ClientInit: shared
    width, height = struct.unpack(">HH", stream.read(4))
    stream.read(16)  # the server's pixel format
    (name_length,) = struct.unpack(">I", stream.read(4))
    stream.read(name_length)
    return width, height


def _reason(stream: _Stream) -> str:
    (length,) = struct.unpack(">I", stream.read(4))
    return stream.read(length).decode("utf-8", "replace")


def rfb_first_frame(stream: _Stream, width: int, height: int) -> None:
    """noVNC's pixel format, encodings and full update request (one message, as noVNC flushes
    them); returns when the first FramebufferUpdate's header has arrived."""
    stream.send(_NOVNC_PIXEL_FORMAT + _SET_ENCODINGS + struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    while True:
        (kind,) = stream.read(1)
        if kind == 0:  # FramebufferUpdate: padding and the number of rectangles complete its header
            stream.read(3)
            return
        if kind == 1:  # SetColourMapEntries
            _pad, _first, colours = struct.unpack(">BHH", stream.read(5))
            stream.read(6 * colours)
        elif kind == 2:  # Bell
            pass
        elif kind == 3:  # ServerCutText (a negative length: extended clipboard)
            (length,) = struct.unpack(">3xi", stream.read(7))
            stream.read(abs(length))
        elif kind == 150:  # EndOfContinuousUpdates
            pass
        elif kind == 248:  # Fence
            _flags, length = struct.unpack(">3xIB", stream.read(8))
            stream.read(length)
        elif kind == 250:  # XVP
            stream.read(3)
        else:
            raise LaunchFailed(f"unexpected RFB server message type {kind} before the first frame")


# -- the broker: what the browser does ---------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 302 comes back as a response; the caller follows it, timed on its own


class BrowserUser:
    """One employee's browser: its own cookie jar (login session and CSRF cookie)."""

    def __init__(self, *, base_url: str, username: str, password: str, pool_id: int, timeout_s: float, stop):
        self.base_url, self.username, self.password = base_url, username, password
        self.pool_id, self.timeout_s, self.stop = pool_id, timeout_s, stop
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)
        self.desktop_id: int | None = None

    # HTTP as the page makes it: the portal's own Origin on every POST (a browser sends it).
    def _request(self, method: str, path: str, *, form: dict | None = None, headers: dict | None = None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={**({"Origin": self.base_url} if method == "POST" else {}),
                                                  **(headers or {})})
        try:
            response = self.opener.open(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as error:
            response = error  # 3xx (not followed) and 4xx/5xx: the caller looks at the status
        with response:
            return response.status, response.headers, response.read().decode("utf-8", "replace")

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    @staticmethod
    def _csrf_of(html: str) -> str:
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        if match is None:
            raise LaunchFailed("the page has no CSRF token")
        return match.group(1)

    def log_in(self) -> None:
        """The login form, as a person fills it in (untimed: PBKDF2 costs ~230 ms of CPU)."""
        _status, _headers, html = self._request("GET", "/login/")
        status, _headers, _body = self._request("POST", "/login/", form={
            "csrfmiddlewaretoken": self._csrf_of(html), "username": self.username, "password": self.password})
        if status != 302:
            raise LaunchFailed(f"login of {self.username} failed (HTTP {status})")

    def home_page_token(self) -> str:
        """My desktops, where the Launch/Connect button's form is (untimed: the user is looking
        at it before pressing the button)."""
        status, _headers, html = self._request("GET", "/")
        if status != 200 or f"/pools/{self.pool_id}/launch/" not in html:
            raise LaunchFailed(f"{self.username}'s home page has no launch form for the farm (HTTP {status})")
        return self._csrf_of(html)

    def launch_to_first_frame(self, csrf_token: str) -> Sample:
        """Press Launch (or Connect) and follow the page until the console's first frame."""
        t0 = time.perf_counter()
        deadline = t0 + self.timeout_s
        status, headers, _body = self._request("POST", f"/pools/{self.pool_id}/launch/",
                                               form={"csrfmiddlewaretoken": csrf_token})
        location = headers.get("Location", "")
        match = re.fullmatch(r"/desktops/(\d+)/", location)
        if status != 302 or match is None:
            raise LaunchFailed(f"launch refused (HTTP {status}, redirect to {location!r})")
        self.desktop_id = int(match.group(1))
        t_post = time.perf_counter()
        status, _headers, html = self._request("GET", location)
        if status != 200:
            raise LaunchFailed(f"desktop page: HTTP {status}")
        page_csrf = self._csrf_of(html)
        progress_path = re.search(r'data-progress-path="([^"]+)"', html).group(1)
        ticket_url = re.search(r'data-ticket-url="([^"]+)"', html).group(1)
        status_url = re.search(r'data-status-url="([^"]+)"', html).group(1)
        t_page = time.perf_counter()
        progress_socket, how = self._follow_progress(progress_path, status_url, deadline)
        wall_ready = time.time()
        t_ready = time.perf_counter()
        status, _headers, body = self._request("POST", ticket_url, form={"protocol": "vnc"},
                                               headers={"X-CSRFToken": page_csrf})
        if status != 200:
            raise LaunchFailed(f"console ticket refused (HTTP {status}): {body[:200]}")
        ws_url = json.loads(body)["url"]
        t_ticket = time.perf_counter()
        try:
            console = ws_connect(ws_url, origin=self.base_url, additional_headers={"Cookie": self.cookie_header()},
                                 subprotocols=["binary"], proxy=None, open_timeout=max(1, deadline - t_ticket),
                                 max_size=None, ping_interval=None)
        except (OSError, WebSocketException) as exc:
            raise LaunchFailed(f"console websocket: {exc}") from None
        t_open = time.perf_counter()
        try:
            stream = _Stream(ws=console, deadline=deadline, stop=self.stop)
            width, height = rfb_open(stream, password=None)
            t_init = time.perf_counter()
            rfb_first_frame(stream, width, height)
            t_frame = time.perf_counter()
        finally:
            console.close()  # the user closes the tab once the desktop shows; the session stays
            if progress_socket is not None:
                progress_socket.close()
        return Sample(who=self.username, first_frame_s=t_frame - t0, desktop_id=self.desktop_id,
                      wall_ready=wall_ready, progress_via=how, phases={
                          "launch_post": t_post - t0, "desktop_page": t_page - t_post,
                          "progress_to_ready": t_ready - t_page, "ticket": t_ticket - t_ready,
                          "console_open": t_open - t_ticket, "rfb_to_serverinit": t_init - t_open,
                          "first_frame": t_frame - t_init})

    def _follow_progress(self, progress_path: str, status_url: str, deadline: float):
        """console.js followLaunch(): the progress websocket until "ready"; if it cannot open or
        closes first, ask /status/ every 400 ms. Returns (the socket, left for the server to
        close as the page does; "websocket" or "polling")."""
        ws_base = "ws" + self.base_url[len("http"):]
        try:
            progress_socket = ws_connect(ws_base + progress_path, origin=self.base_url,
                                         additional_headers={"Cookie": self.cookie_header()}, proxy=None,
                                         open_timeout=max(1, deadline - time.perf_counter()), ping_interval=None)
        except (OSError, WebSocketException):
            progress_socket = None
        if progress_socket is not None:
            try:
                while True:  # (the socket is closed by our caller after the first frame, or here on failure)
                    left = deadline - time.perf_counter()
                    if left <= 0 or self.stop.is_set():
                        raise LaunchFailed("stopped" if self.stop.is_set() else
                                           "timed out waiting for the session to be ready")
                    try:
                        progress = json.loads(progress_socket.recv(timeout=min(left, 0.5)))
                    except TimeoutError:
                        continue
                    if progress["ready"]:
                        return progress_socket, "websocket"
                    if progress["failed"]:
                        raise LaunchFailed(f"the session failed: {progress['error']}")
            except WebSocketException:
                pass  # closed before "ready": the page falls back to polling
            except BaseException:
                progress_socket.close()
                raise
        while time.perf_counter() < deadline and not self.stop.is_set():
            status, _headers, body = self._request("GET", status_url, headers={"Accept": "application/json"})
            if status == 200:
                progress = json.loads(body)
                if progress["ready"]:
                    return None, "polling"
                if progress["failed"]:
                    raise LaunchFailed(f"the session failed: {progress['error']}")
            time.sleep(STATUS_POLL_S)
        raise LaunchFailed("timed out waiting for the session to be ready")


# -- by hand: what an admin would type ------------------------------------------------------------


class HandSession:
    """One shared session started by hand as root for a pre-created account, on display :D."""

    def __init__(self, *, account, display: int, timeout_s: float, stop, wait_for_wm: bool = False):
        self.account, self.display, self.timeout_s, self.stop = account, display, timeout_s, stop
        # As the agent does: xterm only once icewm manages the screen (else it stays unmanaged).
        self.wait_for_wm = wait_for_wm
        self.port = displays.rfb_port(display)
        self.password = secrets.token_urlsafe(6)[:8]
        self.vnc_dir = os.path.join(account.home, ".vnc")
        self.xauthority = os.path.join(account.home, ".Xauthority")
        self.processes: list[subprocess.Popen] = []  # the runuser parents (root), which stay

    def _env(self) -> dict[str, str]:
        return {"HOME": self.account.home, "USER": self.account.name, "LOGNAME": self.account.name,
                "SHELL": "/bin/bash", "PATH": USER_PATH, "LANG": "C.UTF-8", "DISPLAY": f":{self.display}",
                "XAUTHORITY": self.xauthority}

    def _runuser(self, argv: list[str], log) -> subprocess.Popen:
        process = subprocess.Popen([RUNUSER, "-u", self.account.name, "--", *argv], env=self._env(),
                                   cwd=self.account.home, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def start_to_first_frame(self) -> Sample:
        uid, gid = self.account.uid, self.account.gid
        t0 = time.perf_counter()
        os.makedirs(self.vnc_dir, mode=0o700, exist_ok=True)
        os.chown(self.vnc_dir, uid, gid)
        password_file = os.path.join(self.vnc_dir, "passwd")
        write_vnc_password_file(password_file, self.password, uid=uid, gid=gid)
        cookie = subprocess.run([RUNUSER, "-u", self.account.name, "--", "xauth", "-q", "-f", self.xauthority,
                                 "source", "-"], input=f"add :{self.display} . {secrets.token_hex(16)}\n",
                                text=True, capture_output=True, env=self._env(), cwd=self.account.home, timeout=10,
                                check=False)
        if cookie.returncode != 0:
            raise LaunchFailed(f"xauth for :{self.display}: {cookie.stderr.strip()}")
        t_files = time.perf_counter()
        with open(os.path.join(self.vnc_dir, "session.log"), "ab") as log:
            os.fchown(log.fileno(), uid, gid)
            xvnc = self._runuser([
                "Xvnc", f":{self.display}", "-rfbport", str(self.port), "-SecurityTypes", "VncAuth",
                "-PasswordFile", password_file, "-auth", self.xauthority, "-localhost=1", "-geometry", "1280x800",
                "-depth", "24", "-desktop", f"{self.account.name}", "-nolisten", "tcp",
                # As the broker's agent runs it (broker/sessionhost/launch.py), so both servers are alike.
                "-AlwaysShared", "-DisconnectClients=0", "-UseBlacklist=0"], log)
            try:
                ready = displays.wait_for_rfb("127.0.0.1", self.port, process=xvnc, timeout_s=XVNC_READY_TIMEOUT_S)
            except TimeoutError:
                ready = False
            if not ready:
                raise LaunchFailed(f"Xvnc :{self.display} did not answer (see {self.vnc_dir}/session.log)")
            t_xvnc = time.perf_counter()
            self._runuser(["icewm"], log)
            if self.wait_for_wm:
                self._wait_for_window_manager()
            self._runuser(["xterm"], log)
        t_programs = time.perf_counter()
        sample = self.connect_to_first_frame(t0=t0)
        sample.phases = {"password_and_cookie": t_files - t0, "xvnc_to_rfb": t_xvnc - t_files,
                         "start_icewm_xterm": t_programs - t_xvnc, **sample.phases}
        return sample

    def _wait_for_window_manager(self):
        deadline = time.perf_counter() + self.timeout_s
        while time.perf_counter() < deadline:
            found = subprocess.run(["setpriv", f"--reuid={self.account.uid}", f"--regid={self.account.gid}",
                                    "--init-groups", "--", "xprop", "-root", "-notype", "_NET_SUPPORTING_WM_CHECK"],
                                   env=self._env(), capture_output=True, text=True, timeout=10, check=False)
            if "window id #" in found.stdout:
                return
            time.sleep(0.01)
        raise LaunchFailed(f"icewm did not manage :{self.display}")

    def connect_to_first_frame(self, *, t0: float | None = None) -> Sample:
        """A VNC viewer on the host: TCP, VNC authentication, ClientInit, first frame."""
        t_start = time.perf_counter()
        t0 = t_start if t0 is None else t0
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise LaunchFailed(f"VNC connection to :{self.display}: {exc}") from None
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = _Stream(sock=sock, deadline=t_start + self.timeout_s, stop=self.stop)
            width, height = rfb_open(stream, password=self.password)
            t_init = time.perf_counter()
            rfb_first_frame(stream, width, height)
            t_frame = time.perf_counter()
        return Sample(who=self.account.name, first_frame_s=t_frame - t0,
                      phases={"rfb_to_serverinit": t_init - t_start, "first_frame": t_frame - t_init})

    def pss_mib(self) -> float:
        """PSS of every process of the account (one session per account) and of the runuser
        parents that stay as root, as session_pss_mib counts the broker's root supervisor."""
        parents = {p.pid for p in self.processes if p.poll() is None}
        kib = sum(procfs.pss_kib(proc.pid) for proc in procfs.running_processes(
            lambda proc: proc.owned_by(self.account.uid) or proc.pid in parents))
        return kib / 1024


def stop_hand_sessions(sessions: list[HandSession]) -> list[int]:
    """SIGTERM every process of the sessions' accounts (Xvnc removes its lock and socket),
    SIGKILL what is left after 2 s; then the runuser parents. Returns pids that survived."""
    uids = {s.account.uid for s in sessions}
    left = procfs.terminate(lambda proc: any(proc.owned_by(uid) for uid in uids), grace_s=2.0)
    for session in sessions:
        for process in session.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                left.append(process.pid)
        _remove_stale_display_files(session.display)
    return left


def _remove_stale_display_files(display: int) -> None:
    """The lock file and socket of an Xvnc that died without removing them (SIGKILL)."""
    try:
        with open(f"/tmp/.X{display}-lock", encoding="ascii") as stream:
            owner = int(stream.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return
    if procfs.read_proc(owner) is None:
        displays.remove_stale_display_files(display, server_pid=owner)
