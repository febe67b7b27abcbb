"""The RFB (VNC) handshake, done by the gateway on both sides so the password stays here.

Toward the desktop the gateway answers QEMU's "VNC authentication" with the one-time password
the broker set on the domain; toward the browser it offers "None", so noVNC never sees a
password. After both handshakes the two streams are spliced: the browser's ClientInit goes
to QEMU and QEMU's ServerInit comes back, byte for byte.

RFB 3.3, 3.7 and 3.8 are understood on both sides (RFC 6143).
"""

from __future__ import annotations

import asyncio
import struct

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2
VERSION_38 = b"RFB 003.008\n"
_VERSIONS = {b"RFB 003.003\n": 3, b"RFB 003.007\n": 7, b"RFB 003.008\n": 8,
             # Apple and UltraVNC variants speak 3.3 / 3.7 on the wire.
             b"RFB 003.889\n": 3, b"RFB 003.005\n": 3, b"RFB 003.006\n": 3}
HANDSHAKE_TIMEOUT_S = 10


class HandshakeFailed(Exception):
    """A side broke the RFB handshake; the message is safe to show the user (no secrets)."""


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """DES-encrypt the 16-byte challenge with the password as key, VNC style: the key is the
    password's first 8 bytes (zero-padded) with each byte's bits reversed."""
    if len(challenge) != 16:
        raise HandshakeFailed("The desktop sent a malformed VNC challenge.")
    key = bytes(_reverse_bits(b) for b in password.encode("latin-1")[:8].ljust(8, b"\0"))
    # Triple DES with three equal keys is single DES.
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def _parse_version(line: bytes) -> int:
    minor = _VERSIONS.get(line)
    if minor is None:
        if line.startswith(b"RFB 003.") and line.endswith(b"\n"):
            return 8 if line > VERSION_38 else 3  # newer: speak 3.8; unknown older: 3.3
        raise HandshakeFailed("Not a VNC console.")
    return minor


async def _read_reason(reader: asyncio.StreamReader) -> str:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return (await reader.readexactly(min(length, 4096))).decode("utf-8", "replace")


async def authenticate_to_desktop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                  password: str) -> None:
    """Log in to the desktop's VNC server; afterwards it waits for the ClientInit."""
    try:
        server_minor = _parse_version(await reader.readexactly(12))
        minor = min(server_minor, 8)
        writer.write(b"RFB 003.%03d\n" % minor)
        if minor == 3:
            (security,) = struct.unpack(">I", await reader.readexactly(4))
            if security == 0:
                raise HandshakeFailed(f"The desktop refused the console: {await _read_reason(reader)}")
        else:
            (count,) = await reader.readexactly(1)
            if count == 0:
                raise HandshakeFailed(f"The desktop refused the console: {await _read_reason(reader)}")
            offered = await reader.readexactly(count)
            if SECURITY_VNC_AUTH in offered:
                security = SECURITY_VNC_AUTH
            elif SECURITY_NONE in offered:
                security = SECURITY_NONE
            else:
                raise HandshakeFailed("The desktop asks for a console login the gateway does not speak.")
            writer.write(bytes([security]))
        if security == SECURITY_VNC_AUTH:
            challenge = await reader.readexactly(16)
            writer.write(vnc_auth_response(password, challenge))
        elif security != SECURITY_NONE:
            raise HandshakeFailed("The desktop asks for a console login the gateway does not speak.")
        await writer.drain()
        if security == SECURITY_VNC_AUTH or minor == 8:
            (result,) = struct.unpack(">I", await reader.readexactly(4))
            if result != 0:
                # QEMU says "Authentication failed"; the usual cause is an expired password.
                detail = await _read_reason(reader) if minor == 8 else "authentication failed"
                raise HandshakeFailed(f"The desktop refused the console password ({detail}). Reload to retry.")
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise HandshakeFailed("The desktop closed the console during login.") from exc


class BrowserBytes:
    """Bytes from the browser's websocket, read as a stream (a message may hold any part)."""

    def __init__(self, receive_message):
        self._receive_message = receive_message  # async () -> bytes, raises on close
        self._buffer = bytearray()

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._buffer += await self._receive_message()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def leftover(self) -> bytes:
        data, self._buffer = bytes(self._buffer), bytearray()
        return data


async def offer_no_authentication(browser: BrowserBytes, send_bytes) -> None:
    """Play the VNC server toward the browser up to the ClientInit, offering "None" security."""
    await send_bytes(VERSION_38)
    minor = _parse_version(await browser.readexactly(12))
    if minor == 3:
        await send_bytes(struct.pack(">I", SECURITY_NONE))
        return
    await send_bytes(bytes([1, SECURITY_NONE]))
    (chosen,) = await browser.readexactly(1)
    if chosen != SECURITY_NONE:
        raise HandshakeFailed("The browser chose a console login the gateway did not offer.")
    if minor == 8:
        await send_bytes(struct.pack(">I", 0))


# Client-to-server message types that carry a person's input (RFC 6143 7.5, QEMU's 255).
_FRAMEBUFFER_UPDATE_REQUEST = 3
_UPDATE_REQUEST_LENGTH = 10


def carries_user_input(message: bytes) -> bool:
    """False for the viewer's own traffic (framebuffer update requests, which noVNC sends after
    every frame); anything else (keys, pointer, clipboard) counts as the user being there."""
    if len(message) % _UPDATE_REQUEST_LENGTH:
        return True
    return any(message[i] != _FRAMEBUFFER_UPDATE_REQUEST for i in range(0, len(message), _UPDATE_REQUEST_LENGTH))
