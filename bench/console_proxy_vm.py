"""The console proxy bench's stand-in for a VM's VNC port, run in a process of its own.

    python bench/console_proxy_vm.py [--security none|vnc] [--password PW]

Prints `listening <port>` once it accepts connections, then serves until SIGTERM. Each
connection opens like QEMU's VNC server: the RFB 3.8 greeting, security None or VNC
authentication (a DES challenge against --password), SecurityResult, ClientInit, ServerInit.
Then the client picks what this connection is for with one 9-byte message, a mode byte and a
big-endian u64 argument:

    b"E" + 0    echo every byte back (round-trip latency)
    b"F" + n    send n bytes of incompressible data as fast as the socket drains (n = 0:
                until the client leaves), then keep the connection open (throughput)
    (nothing)   an idle console: the connection stays open, nothing is sent

A process of its own, so its CPU is not counted against any proxy and it does not share the
bench client's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from console_proxy_rfb import (  # noqa: E402
    SECURITY_NONE,
    SECURITY_VNC_AUTH,
    SERVER_INIT,
    VERSION_38,
    vnc_auth_response,
)

FLOOD_CHUNK = os.urandom(256 * 1024)  # random, so no compression anywhere can shrink it
MODE_ECHO, MODE_FLOOD = b"E", b"F"
NAME = b"vdibench-vm"


def raise_open_files_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def open_rfb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, security: str,
                   password: str) -> bool:
    """The server's side of the RFB opening; False if the client failed it."""
    writer.write(VERSION_38)
    if (await reader.readexactly(12))[:8] != b"RFB 003.":
        return False
    offered = SECURITY_VNC_AUTH if security == "vnc" else SECURITY_NONE
    writer.write(bytes([1, offered]))
    if (await reader.readexactly(1))[0] != offered:
        return False
    if offered == SECURITY_VNC_AUTH:
        challenge = os.urandom(16)
        writer.write(challenge)
        if await reader.readexactly(16) != vnc_auth_response(password, challenge):
            reason = b"Authentication failed"
            writer.write(struct.pack(">II", 1, len(reason)) + reason)
            await writer.drain()
            return False
    writer.write(struct.pack(">I", 0))
    await reader.readexactly(1)  # ClientInit
    writer.write(SERVER_INIT + struct.pack(">I", len(NAME)) + NAME)
    await writer.drain()
    return True


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, total: int) -> None:
    chunk = memoryview(FLOOD_CHUNK)
    left = total or float("inf")
    while left > 0:
        piece = chunk if left >= len(chunk) else chunk[: int(left)]
        writer.write(piece)
        await writer.drain()  # blocks while nobody reads: that is what a slow reader measures
        left -= len(piece)
    await reader.read()  # keep the connection until the client closes it


def serve(security: str, password: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as QEMU's VNC server does
        try:
            if not await open_rfb(reader, writer, security=security, password=password):
                return
            request = await reader.readexactly(9)  # an idle client never sends it
            mode, (argument,) = request[:1], struct.unpack(">Q", request[1:])
            if mode == MODE_ECHO:
                await echo(reader, writer)
            elif mode == MODE_FLOOD:
                await flood(reader, writer, argument)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--security", choices=["none", "vnc"], default="none")
    parser.add_argument("--password", default="", help="with --security vnc: the password answers must match")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    raise_open_files_limit()
    server = await asyncio.start_server(serve(args.security, args.password), "127.0.0.1", args.port,
                                        backlog=2048, limit=256 * 1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
