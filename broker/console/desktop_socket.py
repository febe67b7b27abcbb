"""The desktop's console socket once the handshake is over: chunks in, bytes out, with
backpressure both ways."""

from __future__ import annotations

import asyncio
import collections

READY_BEFORE_PAUSE = 2  # chunks waiting for the browser before the desktop is read no more


class DesktopChunks(asyncio.Protocol):
    """The desktop socket after the handshake: each chunk as recv() returned it, with no
    StreamReader buffer to copy into and slice out of.

    With a `direct` sender (uvicorn_protocol.DirectBinarySend) a chunk goes to the browser
    from data_received itself while the browser's socket takes it: no future, no task switch,
    no ASGI message per chunk. Otherwise, or while the browser's socket is full, chunks queue
    for the relay's pump, which sends them through ASGI. Order is kept: a chunk goes direct only
    when none is queued and the pump holds none. Reading pauses while READY_BEFORE_PAUSE chunks
    wait, or while the browser's socket is full; writes to the desktop wait while its socket's
    send buffer is full."""

    def __init__(self, transport: asyncio.Transport, leftover: bytes, direct=None):
        self.transport = transport
        self.direct = direct
        self.chunks = collections.deque([leftover] if leftover else [])
        self.held = False  # the pump took a chunk and has not sent it yet
        self.stalled = False  # reading paused because the browser's socket is full
        self.sent_directly = 0
        self.eof = False
        self.waiter: asyncio.Future | None = None
        self.paused = False
        self.writable = asyncio.Event()
        self.writable.set()

    def _wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _pause_reading(self):
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def data_received(self, data: bytes):
        direct = self.direct
        if direct is not None and not self.chunks and not self.held and not self.stalled and direct.can_send_now():
            direct.send_now(data)
            self.sent_directly += len(data)
            if not direct.can_send_now():  # the browser's socket is full: read on once it drains
                self.stalled = True
                self._pause_reading()
                self._wake()
            return
        self.chunks.append(data)
        if len(self.chunks) >= READY_BEFORE_PAUSE:
            self._pause_reading()
        self._wake()

    def eof_received(self):
        self.eof = True
        self._wake()

    def connection_lost(self, exc):
        self.eof = True
        self.writable.set()
        self._wake()

    def pause_writing(self):
        self.writable.clear()

    def resume_writing(self):
        self.writable.set()

    async def read(self) -> bytes:
        """The next chunk for the pump to send (b"" at the end); the previous one was sent."""
        self.held = False
        while True:
            if self.chunks:
                data = self.chunks.popleft()
                self.held = True
                self._maybe_resume_reading()
                return data
            if self.stalled:
                await self.direct.writable()
                self.stalled = False
                self._maybe_resume_reading()
                continue
            if self.eof:
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter

    def _maybe_resume_reading(self):
        if self.paused and not self.stalled and len(self.chunks) < READY_BEFORE_PAUSE:
            self.paused = False
            self.transport.resume_reading()

    async def write(self, data: bytes):
        if self.transport.is_closing():
            raise ConnectionResetError("the desktop closed its console")
        self.transport.write(data)
        await self.writable.wait()
