"""The console proxy bench's browsers and what they measure.

A peer is one way to reach the fake VM: the project's gateway (session cookie, Origin, a
fresh ticket), websockify (the same websocket client, same headers), or a raw TCP connection
(the floor). Every session opens with console_proxy_rfb.handshake_as_browser, whatever the
peer, and then asks the fake VM for echo, a flood or nothing (console_proxy_vm.py).

The websocket client is identical for the gateway and websockify: console_proxy_lean.py by
default, or with --client websockets the websockets library's asyncio client (no compression,
no size limit). Either way subprotocol `binary` and no keepalive pings (browsers send none).
"""

from __future__ import annotations

import abc
import asyncio
import statistics
import struct
import time
from collections import Counter
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.protocol import State

from console_proxy_lean import lean_connect
from console_proxy_rfb import SECURITY_NAMES, handshake_as_browser

MODE_ECHO, MODE_FLOOD = b"E", b"F"
# Which websocket client the gateway and websockify peers use: "lean" (console_proxy_lean.py,
# cheap per read) or "websockets" (the library). Set from --client.
WEBSOCKET_CLIENT = "lean"
OPEN_TIMEOUT_S = 30
CLOSE_TIMEOUT_S = 2
READ_TIMEOUT_S = 30  # one read: far beyond any stall the bench reports


# -- byte streams over the two transports -------------------------------------------------------


class WebSocketStream:
    def __init__(self, ws):
        self.ws = ws
        self.pending = bytearray()

    async def read_some(self, limit: int | None = None) -> bytes:
        if not self.pending:
            data = await asyncio.wait_for(self.ws.recv(), READ_TIMEOUT_S)
            if limit is None or len(data) <= limit:
                return data
            self.pending += data
        limit = len(self.pending) if limit is None else limit
        data = bytes(self.pending[:limit])
        del self.pending[:limit]
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self.pending) < n:
            self.pending += await asyncio.wait_for(self.ws.recv(), READ_TIMEOUT_S)
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data

    async def write(self, data: bytes) -> None:
        await self.ws.send(data)

    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    def close_code(self) -> int | None:
        return None if self.ws.state is State.OPEN else self.ws.close_code

    def close_info(self) -> str:
        if self.ws.close_code is None:
            return f"no close code ({self.ws.state.name})"
        return f"{self.ws.close_code} {self.ws.close_reason}".strip()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), CLOSE_TIMEOUT_S + 1)
        except (asyncio.TimeoutError, OSError):
            self.ws.transport.abort()


class TcpStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def read_some(self, limit: int | None = None) -> bytes:
        data = await asyncio.wait_for(self.reader.read(limit or 256 * 1024), READ_TIMEOUT_S)
        if not data:
            raise ConnectionError("the VM closed the connection")
        return data

    async def readexactly(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), READ_TIMEOUT_S)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def is_open(self) -> bool:
        return not self.writer.is_closing()

    def close_code(self) -> None:
        return None

    def close_info(self) -> str:
        return "closed" if self.writer.is_closing() else "open"

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT_S)
        except (asyncio.TimeoutError, OSError):
            pass


# -- peers --------------------------------------------------------------------------------------


@dataclass
class Session:
    stream: object
    setup_s: float  # from connect to ServerInit received (ticket check, relay, RFB opening)
    security: int
    ticket: object = None  # what prepare() gave for it (gateway: its slot and token)


class Peer(abc.ABC):
    """How a browser reaches the VM through one relay. `prepare` hands out what `open` needs."""

    name = "?"
    service = None  # the relay's process, for CPU and memory; None for raw TCP

    def __init__(self, *, vm_password: str | None):
        self.vm_password = vm_password
        self.securities: set[int] = set()

    async def prepare(self, count: int) -> list:
        return [None] * count

    @property
    def ticket_s(self) -> float:
        """Seconds spent issuing tickets so far (the portal's work, not the relay's)."""
        return 0.0

    @abc.abstractmethod
    async def connect(self, ticket) -> object:
        """Open the byte stream to the VM as this peer does (websocket or TCP)."""

    async def open(self, ticket=None) -> Session:
        started = time.perf_counter()
        stream = await self.connect(ticket)
        try:
            security = await handshake_as_browser(stream, password=self.vm_password)
        except BaseException:
            await stream.close()
            raise
        self.securities.add(security)
        return Session(stream=stream, setup_s=time.perf_counter() - started, security=security, ticket=ticket)

    def security_names(self) -> str:
        return "/".join(SECURITY_NAMES.get(s, str(s)) for s in sorted(self.securities)) or "-"


def _ws_options(origin: str, cookie_header: str | None) -> dict:
    return dict(
        origin=origin,
        additional_headers={"Cookie": cookie_header} if cookie_header else {},
        subprotocols=["binary"],
        compression=None,
        max_size=None,
        ping_interval=None,
        open_timeout=OPEN_TIMEOUT_S,
        close_timeout=CLOSE_TIMEOUT_S,
        proxy=None,
    )


async def _open_websocket(port: int, path: str, origin: str, cookie_header: str | None):
    if WEBSOCKET_CLIENT == "lean":
        return await lean_connect("127.0.0.1", port, path, origin=origin, cookie_header=cookie_header)
    return WebSocketStream(await connect(f"ws://127.0.0.1:{port}{path}", **_ws_options(origin, cookie_header)))


class GatewayPeer(Peer):
    """The project's console websocket, served by uvicorn, one ticket per connection."""

    name = "gateway"

    def __init__(self, *, service, port: int, slots: list, issue_tickets, run_in_django, vm_password):
        super().__init__(vm_password=vm_password)
        self.service, self.port, self.slots = service, port, slots
        self.origin = f"http://127.0.0.1:{port}"  # the portal's own origin
        self.issue_tickets, self.run_in_django = issue_tickets, run_in_django
        self.next_slot = 0
        self._ticket_s = 0.0

    @property
    def ticket_s(self) -> float:
        return self._ticket_s

    async def prepare(self, count: int) -> list:
        """Tickets for the next `count` browsers, each its own user, login session and desktop."""
        if count > len(self.slots):
            raise ValueError(f"{count} sessions at once, but only {len(self.slots)} desktops")
        chosen = [self.slots[(self.next_slot + i) % len(self.slots)] for i in range(count)]
        self.next_slot = (self.next_slot + count) % len(self.slots)
        started = time.perf_counter()
        tokens = await self.run_in_django(self.issue_tickets, chosen, origin=self.origin, vm_password=self.vm_password)
        self._ticket_s += time.perf_counter() - started
        return list(zip(chosen, tokens))

    async def close_from_broker(self, sessions: list[Session], *, code: int) -> int:
        """What a logout or a lost entitlement does: a message to each user's console group."""
        from console_proxy_fixture import close_consoles_of_users

        return await self.run_in_django(close_consoles_of_users, [s.ticket[0].user.pk for s in sessions], code=code)

    async def connect(self, ticket):
        slot, token = ticket
        from console_proxy_fixture import session_cookie_header

        path = f"/ws/console/{slot.desktop.pk}/?ticket={token}"
        return await _open_websocket(self.port, path, self.origin, session_cookie_header(slot.cookie))


class WebsockifyPeer(Peer):
    """websockify 0.13 relaying to the same VM port: no ticket, same client, same headers."""

    name = "websockify"

    def __init__(self, *, service, port: int, origin: str, cookie_header: str, vm_password):
        super().__init__(vm_password=vm_password)
        self.service, self.port, self.origin, self.cookie_header = service, port, origin, cookie_header

    async def connect(self, ticket):
        return await _open_websocket(self.port, "/", self.origin, self.cookie_header)


class RawPeer(Peer):
    """Straight to the VM port: what the client and the VM can do with no relay at all."""

    name = "raw TCP"

    def __init__(self, *, vm_port: int, vm_password):
        super().__init__(vm_password=vm_password)
        self.vm_port = vm_port

    async def connect(self, ticket) -> TcpStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.vm_port, limit=256 * 1024)
        return TcpStream(reader, writer)


async def open_sessions(peer: Peer, count: int, *, concurrency: int, batch: int = 100) -> list[Session]:
    """`count` sessions, `concurrency` opening at a time; tickets are issued a batch at a time,
    just before use, so that none expires while a thousand connections queue up."""
    gate = asyncio.Semaphore(concurrency)

    async def one(ticket):
        async with gate:
            return await peer.open(ticket)

    results = []
    for start in range(0, count, batch):
        tickets = await peer.prepare(min(batch, count - start))
        results += await asyncio.gather(*(one(t) for t in tickets), return_exceptions=True)
    sessions = [r for r in results if isinstance(r, Session)]
    failures = [r for r in results if not isinstance(r, Session)]
    if failures:
        await close_sessions(sessions)
        raise RuntimeError(f"{len(failures)} of {count} {peer.name} sessions failed to open: {failures[0]!r}")
    return sessions


async def close_sessions(sessions: list[Session], *, concurrency: int = 100) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(session):
        async with gate:
            await session.stream.close()

    await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)


# -- what each metric does ----------------------------------------------------------------------


class Meter:
    """CPU and RSS of a relay's process tree; all None for raw TCP."""

    def __init__(self, service, cpu_seconds, rss_bytes):
        self.service, self._cpu, self._rss = service, cpu_seconds, rss_bytes

    def cpu(self) -> float | None:
        return None if self.service is None else self._cpu(self.service.pid)

    def rss(self) -> int | None:
        return None if self.service is None else self._rss(self.service.pid)


def _per_gb(cpu0, cpu1, nbytes) -> float | None:
    return None if cpu0 is None else (cpu1 - cpu0) / (nbytes / 1e9)


async def receive(stream, nbytes: int, gaps: list | None = None) -> None:
    got, last = 0, time.perf_counter()
    longest = 0.0
    while got < nbytes:
        got += len(await stream.read_some())
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    if gaps is not None:
        gaps.append(longest)


@dataclass
class Throughput:
    mb_s: float
    cpu_s_per_gb: float | None
    setup_s: float
    client_busy: float  # share of the run the bench's own process was on a CPU: near 1, the client limits


async def single_stream(peer: Peer, meter: Meter, nbytes: int) -> Throughput:
    (ticket,) = await peer.prepare(1)
    session = await peer.open(ticket)
    try:
        cpu0, t0, own0 = meter.cpu(), time.perf_counter(), time.process_time()
        await session.stream.write(MODE_FLOOD + struct.pack(">Q", nbytes))
        await receive(session.stream, nbytes)
        elapsed, cpu1, own = time.perf_counter() - t0, meter.cpu(), time.process_time() - own0
    finally:
        await session.stream.close()
    return Throughput(mb_s=nbytes / elapsed / 1e6, cpu_s_per_gb=_per_gb(cpu0, cpu1, nbytes), setup_s=session.setup_s,
                      client_busy=own / elapsed)


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    setup_s: float


async def round_trips(peer: Peer, count: int, size: int, warmup: int = 100) -> Latency:
    (ticket,) = await peer.prepare(1)
    session = await peer.open(ticket)
    stream = session.stream
    message = bytes(i % 256 for i in range(size))
    samples = []
    try:
        await stream.write(MODE_ECHO + struct.pack(">Q", 0))
        for i in range(warmup + count):
            t0 = time.perf_counter()
            await stream.write(message)
            await stream.readexactly(size)
            if i >= warmup:
                samples.append(time.perf_counter() - t0)
    finally:
        await stream.close()
    samples.sort()
    return Latency(p50_ms=statistics.median(samples) * 1e3, p99_ms=samples[int(0.99 * (len(samples) - 1))] * 1e3,
                   setup_s=session.setup_s)


@dataclass
class Aggregate:
    mb_s: float
    max_stall_s: float
    cpu_s_per_gb: float | None
    setup_p50_s: float
    client_busy: float


async def concurrent_streams(peer: Peer, meter: Meter, sessions_count: int, nbytes: int) -> Aggregate:
    sessions = await open_sessions(peer, sessions_count, concurrency=10)
    gaps: list[float] = []
    try:
        request = MODE_FLOOD + struct.pack(">Q", nbytes)

        async def one(session):
            await session.stream.write(request)
            await receive(session.stream, nbytes, gaps)

        cpu0, t0, own0 = meter.cpu(), time.perf_counter(), time.process_time()
        # The gap before a session's first byte counts too: receive() starts its clock here.
        await asyncio.gather(*(one(s) for s in sessions))
        elapsed, cpu1, own = time.perf_counter() - t0, meter.cpu(), time.process_time() - own0
    finally:
        await close_sessions(sessions)
    total = nbytes * sessions_count
    return Aggregate(mb_s=total / elapsed / 1e6, max_stall_s=max(gaps), cpu_s_per_gb=_per_gb(cpu0, cpu1, total),
                     setup_p50_s=statistics.median(s.setup_s for s in sessions), client_busy=own / elapsed)


@dataclass
class SlowReader:
    growth_mb: float
    read_mb: float


async def slow_reader(peer: Peer, meter: Meter, *, seconds: float, read_bytes: int, every_s: float) -> SlowReader:
    """The VM floods without end; the browser takes `read_bytes` every `every_s`."""
    (ticket,) = await peer.prepare(1)
    session = await peer.open(ticket)
    stream, read = session.stream, 0
    try:
        await asyncio.sleep(0.2)
        baseline = peak = meter.rss()
        await stream.write(MODE_FLOOD + struct.pack(">Q", 0))
        next_tick = time.perf_counter()
        for _ in range(round(seconds / every_s)):
            next_tick += every_s
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
            taken = 0
            while taken < read_bytes:
                taken += len(await stream.read_some(read_bytes - taken))
            read += taken
            peak = max(peak, meter.rss())
    finally:
        await session.stream.close()
    return SlowReader(growth_mb=(peak - baseline) / 2**20, read_mb=read / 2**20)


BROKER_CLOSE_CODE = 4999  # passed through the gateway untouched: only the bench's message closes with it
BROKER_CLOSE_WAIT_S = 20


@dataclass
class Idle:
    opened: int
    held: int
    lost: dict  # how the ones not held were closed: close code and reason -> count
    closed_by_broker: int | None  # of those held, closed within BROKER_CLOSE_WAIT_S of a broker message
    broker_send_s: float | None  # sending the messages
    broker_dropped: int | None  # messages the channel layer dropped (receiving queue over capacity)
    broker_close_s: float | None  # from the first message until the last of them closed
    open_s: float  # opening them all, ticket issuing excluded
    mb_per_conn: float
    rss_before_mb: float
    rss_after_mb: float
    setup_p50_s: float
    setup_p99_s: float


async def idle_connections(peer: Peer, meter: Meter, *, count: int, hold_s: float, concurrency: int) -> Idle:
    await asyncio.sleep(0.5)
    before = meter.rss()
    t0, tickets0 = time.perf_counter(), peer.ticket_s
    sessions = await open_sessions(peer, count, concurrency=concurrency)
    open_s = time.perf_counter() - t0 - (peer.ticket_s - tickets0)
    try:
        await asyncio.sleep(hold_s)
        after = meter.rss()
        held = sum(1 for s in sessions if s.stream.is_open())
        lost = Counter(s.stream.close_info() for s in sessions if not s.stream.is_open())
        closed_by_broker, broker_send_s, broker_dropped, broker_close_s = await _close_from_broker(
            peer, [s for s in sessions if s.stream.is_open()])
    finally:
        await close_sessions(sessions)
    setups = sorted(s.setup_s for s in sessions)
    return Idle(opened=len(sessions), held=held, lost=dict(lost), closed_by_broker=closed_by_broker,
                broker_send_s=broker_send_s, broker_dropped=broker_dropped, broker_close_s=broker_close_s,
                open_s=open_s, mb_per_conn=(after - before) / 2**20 / count,
                rss_before_mb=before / 2**20, rss_after_mb=after / 2**20,
                setup_p50_s=statistics.median(setups), setup_p99_s=setups[int(0.99 * (len(setups) - 1))])


async def _close_from_broker(peer: Peer, sessions: list[Session]) -> tuple:
    """Logout and revocation must reach every console: send each its broker message, then
    count the consoles that closed with the message's code.

    Returns (closed, seconds to send, messages dropped by the channel layer, seconds until
    the last closed or the wait ended)."""
    if not hasattr(peer, "close_from_broker") or not sessions:
        return None, None, None, None
    t0 = time.perf_counter()
    dropped = await peer.close_from_broker(sessions, code=BROKER_CLOSE_CODE)
    sent_s = time.perf_counter() - t0
    deadline = time.perf_counter() + BROKER_CLOSE_WAIT_S
    while any(s.stream.is_open() for s in sessions) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    closed = sum(1 for s in sessions if s.stream.close_code() == BROKER_CLOSE_CODE)
    return closed, sent_s, dropped, time.perf_counter() - t0
