"""A console websocket client as a browser would open it: session cookie, Origin, ticket."""

import asyncio

from django.conf import settings
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


def session_cookie(user) -> str:
    client = Client()
    # Name the backend: the first configured one may be a refusal-only backend (login throttle).
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def open_console(stack, desktop_id, ticket, *, cookie=None, origin="own", path=None):
    path = path or f"/ws/console/{desktop_id}/?ticket={ticket}"
    url = f"ws://127.0.0.1:{stack.port}{path}"
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"} if cookie else {}
    return await connect(
        url,
        origin=stack.base_url if origin == "own" else origin,
        additional_headers=headers,
        subprotocols=["binary"],
        open_timeout=10,
        max_size=None,
    )


def refusal(stack, desktop_id, ticket, **kwargs) -> tuple[int, str]:
    """Open the console and return the close code and reason the gateway answers with; or,
    where it refuses to open the websocket at all, (HTTP status, "<close code> <reason>")."""

    async def attempt():
        try:
            ws = await open_console(stack, desktop_id, ticket, **kwargs)
        except InvalidStatus as refused:
            return refused.response.status_code, refused.response.body.decode()
        try:
            data = await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason
        await ws.close()
        raise AssertionError(f"the gateway let the console through and sent {data[:20]!r}")

    return asyncio.run(attempt())


class WebsocketBytes:
    """Read a websocket's binary messages as a byte stream."""

    def __init__(self, ws):
        self.ws, self.buffer = ws, b""

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += await asyncio.wait_for(self.ws.recv(), 10)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


async def vnc_login_as_browser(ws) -> list[int]:
    """The browser's side of the RFB opening, as noVNC does it; returns the security types the
    gateway offered (it must be [1], "None": the gateway logs in to the desktop itself)."""
    stream = WebsocketBytes(ws)
    version = await stream.read(12)
    assert version == b"RFB 003.008\n", version
    await ws.send(b"RFB 003.008\n")
    (count,) = await stream.read(1)
    offered = list(await stream.read(count))
    await ws.send(bytes([1]))
    assert await stream.read(4) == b"\0\0\0\0", "the gateway refused its own 'None' security"
    assert not stream.buffer
    return offered


def portal_ticket(stack, user, desktop, cookie, server=None, protocol="vnc", **grant):
    """A console ticket as the portal issues it for `stack`'s page; `server` is the fake desktop
    whose VNC password it carries (what grant_console() would have set on a real VM)."""
    from broker.console.tickets import issue_console_ticket

    return issue_console_ticket(user=user, session_key=cookie, desktop=desktop, protocol=protocol,
                                origin=stack.base_url,
                                console_password=server.vnc_password if server is not None else None, **grant)
