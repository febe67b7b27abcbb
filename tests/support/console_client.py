"""A console websocket client as a browser would open it: session cookie, Origin, ticket."""

import asyncio

from django.conf import settings
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def open_console(stack, desktop_id, ticket, *, cookie=None, origin="own"):
    url = f"ws://127.0.0.1:{stack.port}/ws/console/{desktop_id}/?ticket={ticket}"
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
    """Open the console and return the close code and reason the gateway answers with."""

    async def attempt():
        ws = await open_console(stack, desktop_id, ticket, **kwargs)
        try:
            data = await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason
        await ws.close()
        raise AssertionError(f"the gateway let the console through and sent {data[:20]!r}")

    return asyncio.run(attempt())
