"""The console bench's other websocket client (`--client lean`): one that costs little per read.

With the default client (the websockets library) the bench's own process is 40-90% busy in the
50-session run, so the aggregate partly measures the client. This one reads into a 1 MiB
buffer (asyncio.BufferedProtocol), parses frame headers in place and only counts the payload of
a flood, keeping bytes only where the RFB opening or an echo needs them. It speaks just what
the bench needs: the HTTP upgrade, unmasked server frames, masked client frames, ping, close.
The same client for the gateway and websockify; raw TCP keeps its StreamReader.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

BUFFER_BYTES = 1 << 20
READ_TIMEOUT_S = 30


class Count:
    """What read_some() returns here: how many payload bytes arrived, not the bytes."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class LeanWebSocket(asyncio.BufferedProtocol):
    def __init__(self):
        self.buffer = bytearray(BUFFER_BYTES)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0  # unparsed bytes
        self.upgraded = asyncio.get_running_loop().create_future()
        self.payload_left = 0
        self.opcode = 0
        self.control = bytearray()
        self.kept = bytearray()  # payload kept as bytes (handshake, echo)
        self.counted = 0  # payload only counted (flood)
        self.keep = True
        self.waiter: asyncio.Future | None = None
        self.closed: tuple[int | None, str] | None = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.closed is None:
            self.closed = (None, "connection lost")
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("connection lost during the upgrade"))
        self.wake()

    def wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def get_buffer(self, sizehint: int):
        if self.end > BUFFER_BYTES - 256 * 1024:  # move what is left to the front
            left = self.end - self.start
            self.buffer[0:left] = self.buffer[self.start:self.end]
            self.start, self.end = 0, left
        return self.view[self.end:]

    def buffer_updated(self, nbytes: int):
        self.end += nbytes
        self.parse()
        self.wake()

    def parse(self):
        buffer, view = self.buffer, self.view
        if not self.upgraded.done():
            head_end = buffer.find(b"\r\n\r\n", self.start, self.end)
            if head_end < 0:
                return
            status = bytes(buffer[self.start:head_end]).split(b"\r\n")[0]
            self.start = head_end + 4
            if status.split(b" ")[1:2] != [b"101"]:
                self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.upgraded.set_result(None)
        while True:
            if self.payload_left:
                take = min(self.payload_left, self.end - self.start)
                if take == 0:
                    break
                if self.opcode < 8:  # data (or a continuation)
                    if self.keep:
                        self.kept += view[self.start:self.start + take]
                    else:
                        self.counted += take
                else:
                    self.control += view[self.start:self.start + take]
                self.start += take
                self.payload_left -= take
                if self.payload_left == 0 and self.opcode >= 8:
                    self.on_control()
                continue
            available = self.end - self.start
            if available < 2:
                break
            first, second = buffer[self.start], buffer[self.start + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if available < 4:
                    break
                length, header = struct.unpack_from("!H", buffer, self.start + 2)[0], 4
            elif length == 127:
                if available < 10:
                    break
                length, header = struct.unpack_from("!Q", buffer, self.start + 2)[0], 10
            self.start += header
            self.opcode, self.payload_left, self.control = first & 0x0F, length, bytearray()
            if length == 0 and self.opcode >= 8:
                self.on_control()
        if self.start == self.end:
            self.start = self.end = 0

    def on_control(self):
        if self.opcode == 8:
            code = struct.unpack_from("!H", self.control)[0] if len(self.control) >= 2 else 1005
            self.closed = (code, bytes(self.control[2:]).decode(errors="replace"))
            self.transport.close()
        elif self.opcode == 9:
            self.send(0xA, bytes(self.control))

    def send(self, opcode: int, data: bytes):
        length, mask = len(data), os.urandom(4)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(data))  # the bench sends small messages
        self.transport.write(head + mask + masked)


class LeanStream:
    """The byte stream interface of console_proxy_client's streams."""

    def __init__(self, protocol: LeanWebSocket):
        self.protocol = protocol

    async def _wait(self):
        p = self.protocol
        if p.closed is not None:
            raise ConnectionError(f"the websocket closed: {p.closed}")
        p.waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(p.waiter, READ_TIMEOUT_S)

    async def read_some(self, limit: int | None = None) -> Count:
        p = self.protocol
        p.keep = False
        while True:
            if p.kept:
                n = len(p.kept) if limit is None else min(limit, len(p.kept))
                del p.kept[:n]
                return Count(n)
            if p.counted:
                n = p.counted if limit is None else min(limit, p.counted)
                p.counted -= n
                return Count(n)
            await self._wait()

    async def readexactly(self, n: int) -> bytes:
        p = self.protocol
        p.keep = True
        if p.counted:
            raise RuntimeError("bytes already counted cannot be read")
        while len(p.kept) < n:
            await self._wait()
        data = bytes(p.kept[:n])
        del p.kept[:n]
        return data

    async def write(self, data: bytes) -> None:
        self.protocol.send(2, bytes(data))

    def is_open(self) -> bool:
        return self.protocol.closed is None

    def close_code(self) -> int | None:
        return None if self.protocol.closed is None else self.protocol.closed[0]

    def close_info(self) -> str:
        closed = self.protocol.closed
        return "open" if closed is None else f"{closed[0]} {closed[1]}".strip()

    async def close(self) -> None:
        if self.protocol.closed is None:
            try:
                self.protocol.send(8, struct.pack("!H", 1000))
            except Exception:
                pass
        self.protocol.transport.close()


async def lean_connect(host: str, port: int, path: str, *, origin: str, cookie_header: str | None) -> LeanStream:
    loop = asyncio.get_running_loop()
    protocol = LeanWebSocket()
    await loop.create_connection(lambda: protocol, host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: binary",
             f"Origin: {origin}"] + ([f"Cookie: {cookie_header}"] if cookie_header else [])
    protocol.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await asyncio.wait_for(protocol.upgraded, READ_TIMEOUT_S)
    return LeanStream(protocol)
