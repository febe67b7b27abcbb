"""A TCP server on loopback standing in for a guest's console port where a test needs to
control the stream (echo, or an endless flood to measure backpressure)."""

import asyncio
import os
import threading

BANNER = b"RFB 003.008\n"


class StreamServer:
    def __init__(self, mode: str = "echo"):
        assert mode in ("echo", "flood")
        self.mode = mode
        self.bytes_sent = 0
        self.connections = 0
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

    async def _serve(self, reader, writer):
        self.connections += 1
        writer.write(BANNER)
        try:
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
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
