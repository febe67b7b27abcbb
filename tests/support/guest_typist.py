"""Type into a guest's shell the way the browser does: through the broker's console gateway
with a real ticket, speaking RFB as the browser would, one key event per key."""

import asyncio
import struct

from broker.console.tickets import grant_console
from tests.support.console_client import open_console, session_cookie

SHIFT_L = 0xFFE1
RETURN = 0xFF0D
NEEDS_SHIFT = set('~!@#$%^&*()_+{}|:"<>?') | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Reader:
    def __init__(self, ws):
        self.ws, self.buffer = ws, b""

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += await asyncio.wait_for(self.ws.recv(), 15)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


async def _handshake_as_browser(ws) -> None:
    reader = _Reader(ws)
    version = await reader.read(12)
    assert version.startswith(b"RFB "), version
    await ws.send(b"RFB 003.008\n")
    (count,) = struct.unpack("!B", await reader.read(1))
    types = await reader.read(count)
    assert 1 in types, f"the gateway should offer the browser 'None' security, got {list(types)}"
    await ws.send(b"\x01")
    (result,) = struct.unpack("!I", await reader.read(4))
    assert result == 0, "security handshake failed"
    await ws.send(b"\x01")  # ClientInit: shared
    header = await reader.read(24)  # width, height, pixel format, name length
    (name_length,) = struct.unpack("!I", header[20:24])
    await reader.read(name_length)


def _key(down: bool, keysym: int) -> bytes:
    return struct.pack("!BBxxI", 4, 1 if down else 0, keysym)


async def _type(ws, text: str) -> None:
    for char in text:
        keysym = RETURN if char == "\n" else ord(char)
        shifted = char in NEEDS_SHIFT
        if shifted:
            await ws.send(_key(True, SHIFT_L))
        await ws.send(_key(True, keysym))
        await ws.send(_key(False, keysym))
        if shifted:
            await ws.send(_key(False, SHIFT_L))
        await asyncio.sleep(0.02)


def type_into_guest(stack, desktop, user, text: str) -> None:
    cookie = session_cookie(user)
    # The portal's own path: a fresh one-time VNC password on the domain, then the ticket.
    ticket = grant_console(user=user, session_key=cookie, desktop=desktop, protocol="vnc",
                           origin=stack.base_url).token

    async def session():
        ws = await open_console(stack, desktop.pk, ticket, cookie=cookie)
        await _handshake_as_browser(ws)
        await _type(ws, text)
        await asyncio.sleep(0.5)
        await ws.close()

    asyncio.run(session())
