"""uvicorn's `websockets-sansio` websocket protocol, with a binary send path that copies nothing.

    uvicorn ... --ws broker.console.uvicorn_protocol:ConsoleWebSocketProtocol

A console relays gigabytes of screen updates as binary messages. uvicorn frames each one
through websockets' Frame.serialize, which copies the payload into a BytesIO and out again
before the socket sees it. Here a binary message goes out as a 2-10 byte frame header plus the
payload object itself, in one `transport.writelines()` (one writev() under uvloop): the only
copy left is the kernel's. bench/console_proxy.py measured what that is worth (see README).

Everything else (handshake, text, close, pings, flow control, errors) is uvicorn's own code.
The fast path is taken only where uvicorn's would send a plain data frame: handshake done, no
close sent, no HTTP rejection in progress, and websockets' state OPEN (so a closing
connection still gets uvicorn's exact behaviour and errors). No extension may transform
frames on this path: per-message deflate must stay off for consoles (`--ws-per-message-deflate
false`), and with any extension negotiated the stock path is used.
"""

from __future__ import annotations

import struct

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

_FIN_BINARY = 0x82
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def binary_frame_header(length: int) -> bytes:
    """RFC 6455 header of one unmasked, final, binary frame (a server never masks)."""
    if length < 126:
        return _SHORT.pack(_FIN_BINARY, length)
    if length < 65536:
        return _MEDIUM.pack(_FIN_BINARY, 126, length)
    return _LONG.pack(_FIN_BINARY, 127, length)


class ConsoleWebSocketProtocol(WebSocketsSansIOProtocol):
    async def send(self, message) -> None:
        data = message.get("bytes") if message["type"] == "websocket.send" else None
        if (data is None or not self.handshake_complete or self.close_sent or self.initial_response is not None
                or self.conn.state is not State.OPEN or self.conn.extensions):
            return await super().send(message)
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if self.close_sent or self.conn.state is not State.OPEN:  # closed while we waited
            return await super().send(message)
        self.transport.writelines((binary_frame_header(len(data)), data))
