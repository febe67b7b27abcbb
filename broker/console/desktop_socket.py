"""The desktop's console socket once the handshake is over: chunks in, bytes out, with
backpressure both ways."""

from __future__ import annotations

import asyncio
import collections


class DesktopChunks(asyncio.Protocol):
    """The desktop socket after the handshake: each chunk as recv() returned it, with no
    StreamReader buffer to copy into and slice out of (a quarter of the relay's CPU under
    load, per bench/console_proxy.py). Reading pauses while two chunks wait for the browser,
    which keeps the backpressure; writes wait while the socket's send buffer is full."""

    def __init__(self, transport: asyncio.Transport, leftover: bytes):
        self.transport = transport
        self.chunks = collections.deque([leftover] if leftover else [])
        self.eof = False
        self.waiter: asyncio.Future | None = None
        self.paused = False
        self.writable = asyncio.Event()
        self.writable.set()

    def _wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def data_received(self, data: bytes):
        self.chunks.append(data)
        if len(self.chunks) >= 2 and not self.paused:
            self.paused = True
            self.transport.pause_reading()
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
        while not self.chunks:
            if self.eof:
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        data = self.chunks.popleft()
        if self.paused and len(self.chunks) < 2:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes):
        if self.transport.is_closing():
            raise ConnectionResetError("the desktop closed its console")
        self.transport.write(data)
        await self.writable.wait()
