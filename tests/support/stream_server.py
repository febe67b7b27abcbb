"""A TCP server on loopback standing in for a guest's console port where a test needs to
control the stream (echo, or an endless flood to measure backpressure).

By default it opens like QEMU's VNC server with a password: RFB 3.8, "VNC authentication"
only, checking the DES answer; then echoes or floods. `vnc_password=None` offers "None";
`rfb=False` skips RFB altogether (a SPICE channel's stand-in: plain echo)."""

import asyncio
import os
import secrets
import struct
import threading

from broker.console.rfb import vnc_auth_response

BANNER = b"RFB 003.008\n"


class StreamServer:
    def __init__(self, mode: str = "echo", *, vnc_password: str | None = "", rfb: bool = True):
        assert mode in ("echo", "flood")
        self.mode = mode
        self.rfb = rfb
        # "" picks a random password, as the broker's domains have from their first boot.
        self.vnc_password = secrets.token_urlsafe(6)[:8] if vnc_password == "" else vnc_password
        self.bytes_sent = 0
        self.connections = 0
        self.logins = 0
        self.logins_refused = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self):
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _vnc_login(self, reader, writer) -> bool:
        writer.write(BANNER)
        await reader.readexactly(12)
        if self.vnc_password is None:
            writer.write(bytes([1, 1]))
            await reader.readexactly(1)
        else:
            writer.write(bytes([1, 2]))
            await reader.readexactly(1)
            challenge = os.urandom(16)
            writer.write(challenge)
            if await reader.readexactly(16) != vnc_auth_response(self.vnc_password, challenge):
                self.logins_refused += 1
                reason = b"Authentication failed"
                writer.write(struct.pack(">II", 1, len(reason)) + reason)
                await writer.drain()
                return False
        writer.write(struct.pack(">I", 0))
        self.logins += 1
        return True

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            if self.rfb and not await self._vnc_login(reader, writer):
                return
            if self.mode == "echo":
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            else:
                chunk = os.urandom(65536)  # incompressible, like a real screen update stream
                while True:
                    writer.write(chunk)
                    await writer.drain()  # blocks as soon as nobody reads: that is what we measure
                    self.bytes_sent += len(chunk)
        except (ConnectionError, OSError, asyncio.CancelledError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
