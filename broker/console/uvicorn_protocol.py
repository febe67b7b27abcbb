"""uvicorn's `websockets-sansio` websocket protocol, with a binary send path that copies nothing.

    uvicorn ... --ws broker.console.uvicorn_protocol:ConsoleWebSocketProtocol

A console relays gigabytes of screen updates as binary messages. uvicorn frames each one
through websockets' Frame.serialize, which copies the payload into a BytesIO and out again
before the socket sees it. Here a binary message goes out as a 2-10 byte frame header plus the
payload object itself, in one `transport.writelines()` (one writev() under uvloop): the only
copy left is the kernel's. DirectBinarySend (below) lets the console relay do the same from
its desktop socket's callback, with no task switch and no ASGI message.

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
    def sends_plain_frames(self) -> bool:
        """Where uvicorn itself would just frame and write a data message: the handshake is
        done, nothing is closing and no extension transforms frames."""
        return (self.handshake_complete and not self.disconnected and not self.close_sent
                and self.initial_response is None and self.conn.state is State.OPEN and not self.conn.extensions)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated and not self.transport.is_closing():
            # websockets refused the request itself (a URL over 8 KiB: 414; a bad header: 400)
            # and uvicorn never learns of it: send websockets' answer and close, instead of
            # holding the socket open for a request that will never come.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # uvicorn reports 1005 when the socket ends after the handshake. Where no close frame
        # came first (a browser killed, or cut off and its pings unanswered) that is 1006,
        # "closed abnormally" (RFC 6455 7.1.5): the console's session row says so. With a
        # close frame the application has had its disconnect event already.
        if self.handshake_complete and self.conn.close_rcvd is None:
            self.stop_keepalive()
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
            self.connections.remove(self)
            return
        super().connection_lost(exc)

    def handle_ping(self) -> None:
        # websockets queued a pong for every ping. A client that floods pings and never reads
        # would grow the socket's write buffer without bound (tens of MB a second): while the
        # buffer is past its high-water mark, pongs are dropped (RFC 6455 5.5.3 lets an
        # endpoint answer only the latest of several pings; the next one is answered).
        if self.writable.is_set():
            return super().handle_ping()
        self.conn.data_to_send()

    def handle_connect(self, event) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            self.scope["extensions"][DIRECT_BINARY_SEND] = {"sender": DirectBinarySend(self)}

    async def send(self, message) -> None:
        data = message.get("bytes") if message["type"] == "websocket.send" else None
        if data is None or not self.sends_plain_frames():
            return await super().send(message)
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if not self.sends_plain_frames():  # closed while we waited
            return await super().send(message)
        self.transport.writelines((binary_frame_header(len(data)), data))


# An ASGI scope extension of the websockets this protocol serves: {"sender": DirectBinarySend}.
DIRECT_BINARY_SEND = "vdi.direct_binary_send"


class DirectBinarySend:
    """Binary messages written from a plain protocol callback, with no task switch and no ASGI
    message: the console relay writes each chunk of the desktop's screen data the moment it
    arrives, as long as the browser's socket takes it (can_send_now). When the socket's write
    buffer passes its high-water mark the relay stops reading the desktop and awaits
    writable(), which is the same backpressure as the ASGI send's."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: "ConsoleWebSocketProtocol"):
        self.protocol = protocol

    def can_send_now(self) -> bool:
        p = self.protocol
        # is_closing(): the socket may already be shut while connection_lost() is still queued.
        return p.writable.is_set() and p.sends_plain_frames() and not p.transport.is_closing()

    def send_now(self, data) -> None:
        """Only after can_send_now() said yes, in the same callback."""
        self.protocol.transport.writelines((binary_frame_header(len(data)), data))

    async def writable(self) -> None:
        await self.protocol.writable.wait()
