"""The simulated browsers of bench/logon_storm.py: an employee's Monday morning, over HTTP and
websockets, as the portal's pages do it.

  login_page  GET /login/ (the CSRF cookie and the form's token)
  login       POST /login/ with the directory (LDAP) account; the 302 and the login cookie
  home        GET / ("My desktops"), the pool's Launch form
  launch      POST the Launch form, then GET the desktop page it redirects to
  progress    the page's launch progress websocket /ws/launch/<id>/ until "ready" (where it
              cannot open: GET .../status/ every 400 ms, as static/portal/console.js does)
  ticket      POST .../console-ticket/ with the page's CSRF header and Origin
  console     the console websocket (Origin, login cookie, subprotocol "binary"), noVNC's side
              of the RFB opening (version, security "None", ClientInit), up to the ServerInit

One HTTP/1.1 keep-alive connection per browser, on asyncio streams (no client library: on two
shared cores the clients' own CPU matters). Every time is perf_counter() seconds.
"""

from __future__ import annotations

import asyncio
import os
import json
import re
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

PHASES = ["login_page", "login", "home", "launch", "progress", "ticket", "console"]
STATUS_POLL_S = 0.4  # console.js's fallback interval when the progress websocket fails
TIMEOUT_S = 60
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
LAUNCH_FORM = re.compile(r'<form method="post" action="(/pools/\d+/launch/)">')


class Failed(Exception):
    """One browser's journey failed; the message says where and why."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HttpConnection:
    """A browser's one keep-alive connection: requests in turn, cookies kept, no redirects
    followed (the caller does, as the phases name them)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None
        self.cookies: dict[str, str] = {}

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.reader = self.writer = None

    async def request(self, method: str, path: str, *, form: dict | None = None, headers: dict | None = None) -> Response:
        body = urlencode(form).encode() if form is not None else b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: keep-alive",
                 "User-Agent: vdi-logon-storm"]
        if self.cookies:
            lines.append(f"Cookie: {self.cookie_header()}")
        if form is not None:
            lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
        elif method == "POST":
            lines.append("Content-Length: 0")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        for attempt in (1, 2):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                self.writer.write(raw)
                response = await asyncio.wait_for(self._read_response(), TIMEOUT_S)
                break
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                # The server closed an idle keep-alive connection (5 s) just as we reused it.
                await self.close()
                if fresh or attempt == 2:
                    raise Failed(f"{method} {path}: connection lost ({exc!r})") from None
        for value in response.cookies:
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        if response.headers.get("connection", "").lower() == "close":
            await self.close()
        return response

    async def _read_response(self) -> Response:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers, cookies = {}, []
        for line in header_lines:
            if not line:
                continue
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                cookies.append(value)
            headers[name] = value
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = b""
        return Response(status, headers, cookies, body)


@dataclass
class Journey:
    """One browser's way from the login page to its desktop's ServerInit."""

    user: str
    phases: dict[str, float] = field(default_factory=dict)
    error: str = ""
    failed_phase: str = ""
    desktop_id: int | None = None
    progress_via: str = ""
    started: float = 0.0
    finished: float = 0.0


class Browser:
    def __init__(self, host: str, port: int, username: str, password: str):
        self.http = HttpConnection(host, port)
        self.username, self.password = username, password
        self.console_ws = None  # the open console websocket, once the journey is done
        self.csrf = ""
        self.desktop_id: int | None = None
        self.launch_path = ""
        self.phase_done_at: float | None = None

    # -- the journey -----------------------------------------------------------------------------
    async def journey(self, record: Journey) -> None:
        record.started = time.perf_counter()
        for phase in PHASES:
            t0 = time.perf_counter()
            self.phase_done_at = None
            try:
                await asyncio.wait_for(getattr(self, phase)(record), TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - every failure is a counted error with its reason
                record.failed_phase, record.error = phase, _reason(exc)
                if os.environ.get("STORM_DEBUG"):
                    import traceback; traceback.print_exc()
                return
            # A phase may end before its call returns: the page moves on at the progress
            # websocket's "ready" and leaves the socket's closing handshake to the browser.
            record.phases[phase] = (self.phase_done_at or time.perf_counter()) - t0
        record.finished = time.perf_counter()

    async def login_page(self, record):
        page = await self.http.request("GET", "/login/")
        self._expect(page, 200, "login page")
        self.csrf = self._form_token(page)

    async def login(self, record):
        answer = await self.http.request("POST", "/login/", form={
            "csrfmiddlewaretoken": self.csrf, "username": self.username, "password": self.password},
            headers={"Origin": self.http.origin, "Referer": f"{self.http.origin}/login/"})
        if answer.status != 302 or "sessionid" not in self.http.cookies:
            raise Failed(f"login answered {answer.status}: {_message(answer)}")

    async def home(self, record):
        page = await self.http.request("GET", "/")
        self._expect(page, 200, "home")
        self.csrf = self._form_token(page)
        match = LAUNCH_FORM.search(page.text)
        if match is None:
            raise Failed("home page shows no Launch button")
        self.launch_path = match.group(1)

    async def launch(self, record):
        answer = await self.http.request("POST", self.launch_path, form={"csrfmiddlewaretoken": self.csrf},
                                         headers={"Origin": self.http.origin, "Referer": f"{self.http.origin}/"})
        location = answer.headers.get("location", "")
        match = re.fullmatch(r"/desktops/(\d+)/", location)
        if answer.status != 302 or match is None:
            # A refusal goes back home with a message: read it there, for the error's reason.
            home = await self.http.request("GET", "/") if answer.status == 302 else answer
            raise Failed(f"launch refused ({answer.status} -> {location}): {_message(home)}")
        self.desktop_id = record.desktop_id = int(match.group(1))
        page = await self.http.request("GET", location)
        self._expect(page, 200, "desktop page")
        self.csrf = self._form_token(page)

    async def progress(self, record):
        url = f"ws://{self.http.host}:{self.http.port}/ws/launch/{self.desktop_id}/"
        try:
            async with ws_connect(url, origin=self.http.origin, additional_headers={"Cookie": self.http.cookie_header()},
                                  open_timeout=TIMEOUT_S, compression=None) as ws:
                async for message in ws:
                    state = json.loads(message)
                    if state.get("ready"):
                        self.phase_done_at = time.perf_counter()
                        record.progress_via = "websocket"
                        return
                    if state.get("failed"):
                        raise Failed(f"launch failed: {state.get('error')}")
        except (InvalidStatus, ConnectionClosed, OSError):
            pass
        record.progress_via = "polling"  # the page's fallback, at the page's interval
        while True:
            answer = await self.http.request("GET", f"/desktops/{self.desktop_id}/status/",
                                             headers={"Accept": "application/json"})
            self._expect(answer, 200, "status")
            state = json.loads(answer.body)
            if state.get("ready"):
                return
            if state.get("failed"):
                raise Failed(f"launch failed: {state.get('error')}")
            await asyncio.sleep(STATUS_POLL_S)

    async def ticket(self, record):
        answer = await self.http.request("POST", f"/desktops/{self.desktop_id}/console-ticket/",
                                         headers={"X-CSRFToken": self.csrf, "Origin": self.http.origin})
        if answer.status != 200:
            raise Failed(f"console ticket answered {answer.status}: {answer.text[:200]}")
        self.console_url = json.loads(answer.body)["url"]

    async def console(self, record):
        self.console_ws = await ws_connect(self.console_url, origin=self.http.origin, subprotocols=["binary"],
                                        additional_headers={"Cookie": self.http.cookie_header()},
                                        open_timeout=TIMEOUT_S, max_size=None, compression=None)
        stream = _WsBytes(self.console_ws)
        version = await stream.read(12)
        if not version.startswith(b"RFB 003."):
            raise Failed(f"not RFB: {version!r}")
        await self.console_ws.send(b"RFB 003.008\n")
        (count,) = await stream.read(1)
        offered = await stream.read(count)
        if 1 not in offered:
            raise Failed(f"the gateway did not offer 'None' (offered {list(offered)})")
        await self.console_ws.send(bytes([1]))
        if await stream.read(4) != b"\0\0\0\0":
            raise Failed("security result not OK")
        await self.console_ws.send(bytes([1]))  # ClientInit, shared
        width, height = struct.unpack(">HH", await stream.read(4))
        await stream.read(16)  # pixel format
        (name_length,) = struct.unpack(">I", await stream.read(4))
        await stream.read(name_length)
        if not width or not height:
            raise Failed("ServerInit with an empty screen")

    # -- after the journey (the soak) -------------------------------------------------------------
    async def type_keys(self, text: str) -> None:
        """KeyEvent down and up per character, as noVNC sends keystrokes."""
        for char in text:
            keysym = 0xFF0D if char == "\n" else ord(char)
            await self.console_ws.send(struct.pack(">BBxxI", 4, 1, keysym))
            await self.console_ws.send(struct.pack(">BBxxI", 4, 0, keysym))

    async def close_console(self):
        if self.console_ws is not None:
            await self.console_ws.close()
            self.console_ws = None

    async def log_off(self):
        """The desktop page's "Log off" (end the session), then the portal's logout."""
        await self.close_console()
        answer = await self.http.request("POST", f"/desktops/{self.desktop_id}/end/",
                                         form={"csrfmiddlewaretoken": self.csrf},
                                         headers={"Origin": self.http.origin, "Referer": f"{self.http.origin}/"})
        if answer.status != 302:
            raise Failed(f"log off answered {answer.status}")
        await self.log_out()

    async def log_out(self):
        """The portal's Log out."""
        home = await self.http.request("GET", "/")
        self.csrf = self._form_token(home)
        answer = await self.http.request("POST", "/logout/", form={"csrfmiddlewaretoken": self.csrf},
                                         headers={"Origin": self.http.origin, "Referer": f"{self.http.origin}/"})
        if answer.status not in (200, 302):
            raise Failed(f"logout answered {answer.status}")
        self.http.cookies.pop("sessionid", None)

    async def close(self):
        await self.close_console()
        await self.http.close()

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _expect(response: Response, status: int, what: str) -> None:
        if response.status != status:
            raise Failed(f"{what} answered {response.status} {response.headers.get('location', '')}")

    @staticmethod
    def _form_token(page: Response) -> str:
        match = CSRF_INPUT.search(page.text)
        if match is None:
            raise Failed("page without a CSRF token")
        return match.group(1)


class _WsBytes:
    def __init__(self, ws):
        self.ws, self.buffer = ws, b""

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            message = await self.ws.recv()
            if isinstance(message, bytes):
                self.buffer += message
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


def _message(response: Response) -> str:
    found = re.findall(r'class="(?:message|error)[^"]*"[^>]*>([^<]+)<', response.text)
    return (found[0].strip() if found else response.text[:120].replace("\n", " ")) or f"HTTP {response.status}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Failed):
        return str(exc)
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out after {TIMEOUT_S} s"
    if isinstance(exc, InvalidStatus):
        return f"websocket refused: HTTP {exc.response.status_code} {exc.response.body[:100]!r}"
    if isinstance(exc, ConnectionClosed):
        return f"websocket closed: {exc.rcvd.code if exc.rcvd else ''} {exc.rcvd.reason if exc.rcvd else ''}"
    return repr(exc)[:200]


# -- the reference: the HTTP stack alone ---------------------------------------------------------


async def hello_requests(host: str, port: int, count: int) -> list[float]:
    """`count` GETs of the bare hello endpoint on one keep-alive connection, as many requests as a
    storm user's HTTP phases make."""
    http = HttpConnection(host, port)
    times = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            answer = await http.request("GET", "/")
            if answer.status != 200:
                raise Failed(f"hello answered {answer.status}")
            times.append(time.perf_counter() - t0)
    finally:
        await http.close()
    return times
