"""The desktop side of the relay keeps the byte order whichever way a chunk goes to the
browser: directly from data_received while the browser's socket takes it, or through the
relay's pump while the browser is stalled or the pump holds a chunk. A real socket pair and
event loop; the browser is a recorder whose socket fills and drains at random."""

import asyncio
import random
import socket

from broker.console.desktop_socket import DesktopChunks


class BrowserRecorder:
    """What uvicorn_protocol.DirectBinarySend offers the relay, writing into `delivered`."""

    def __init__(self, delivered: list):
        self.delivered, self.drained = delivered, asyncio.Event()
        self.drained.set()

    def can_send_now(self) -> bool:
        return self.drained.is_set()

    def send_now(self, data) -> None:
        self.delivered.append(bytes(data))

    async def writable(self) -> None:
        await self.drained.wait()


def test_no_chunk_overtakes_another_while_the_browser_fills_and_drains():
    rng = random.Random(7)

    async def scenario():
        loop = asyncio.get_running_loop()
        desktop_end, relay_end = socket.socketpair()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=relay_end)
        delivered: list[bytes] = []
        browser = BrowserRecorder(delivered)
        desktop = DesktopChunks(transport, b"leftover of the handshake;", direct=browser)
        transport.set_protocol(desktop)

        async def pump():  # the gateway's pump: an ASGI send takes a moment
            while chunk := await desktop.read():
                await asyncio.sleep(rng.choice([0, 0, 0.002]))
                delivered.append(bytes(chunk))

        async def browser_fills_and_drains():
            while True:
                await asyncio.sleep(rng.choice([0.001, 0.003]))
                if browser.drained.is_set():
                    browser.drained.clear()
                else:
                    browser.drained.set()

        pumping = asyncio.create_task(pump())
        weather = asyncio.create_task(browser_fills_and_drains())
        sent = []
        desktop_end.setblocking(False)
        for i in range(400):
            piece = f"<{i}:{'x' * rng.randint(1, 3000)}>".encode()
            sent.append(piece)
            await loop.sock_sendall(desktop_end, piece)
            if rng.random() < 0.3:
                await asyncio.sleep(0.001)
        desktop_end.close()
        await asyncio.wait_for(pumping, 20)
        weather.cancel()
        return delivered, sent, desktop.sent_directly

    delivered, sent, sent_directly = asyncio.run(scenario())
    assert b"".join(delivered) == b"leftover of the handshake;" + b"".join(sent)
    assert 0 < sent_directly < len(b"".join(sent))  # both ways were taken
