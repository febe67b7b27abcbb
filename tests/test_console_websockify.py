"""A stock websockify with the broker's plugins accepts the same tickets, resolves the same
target, and refuses the same cases as the broker's gateway (as HTTP 403 with the code and
reason, since websockify checks before the websocket opens)."""

import asyncio
import struct

import pytest
from websockets.exceptions import InvalidStatus

from broker.console import rfb
from tests.support.console_client import portal_ticket as ticket
from tests.support.console_client import WebsocketBytes, open_console, session_cookie
from tests.support.gateway_tier import GatewayProcess

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def websockify(live_stack):
    with GatewayProcess(live_stack, "websockify") as gateway:
        yield gateway




@pytest.fixture
def desktop(echo_desktop):
    return echo_desktop



async def open_websockify(gateway, token, *, cookie=None, origin="own"):
    # websockify reads `token`; its URL need not name the desktop (the ticket does).
    return await open_console(gateway.endpoint, "0", "", cookie=cookie, origin=origin,
                              path=f"/?token={token}")


def refusal(gateway, token, **kwargs) -> tuple[int, str]:
    async def attempt():
        try:
            ws = await open_websockify(gateway, token, **kwargs)
        except InvalidStatus as refused:
            return refused.response.status_code, refused.response.reason_phrase
        await ws.close()
        raise AssertionError("websockify let the console through")

    return asyncio.run(attempt())


async def vnc_login_as_noVNC(ws, password: str):
    """With websockify the page answers QEMU's VNC authentication itself."""
    stream = WebsocketBytes(ws)
    assert await stream.read(12) == rfb.VERSION_38
    await ws.send(rfb.VERSION_38)
    (count,) = await stream.read(1)
    assert list(await stream.read(count)) == [rfb.SECURITY_VNC_AUTH]
    await ws.send(bytes([rfb.SECURITY_VNC_AUTH]))
    await ws.send(rfb.vnc_auth_response(password, await stream.read(16)))
    return struct.unpack(">I", await stream.read(4))[0]


def test_websockify_relays_a_console_for_a_valid_ticket(live_stack, websockify, desktop, employee, echo_server):
    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server)

    async def session():
        ws = await open_websockify(websockify, token, cookie=cookie)
        result = await vnc_login_as_noVNC(ws, echo_server.vnc_password)
        await ws.send(b"through websockify")
        echoed = await asyncio.wait_for(ws.recv(), 5)
        await ws.close()
        return result, echoed

    assert asyncio.run(session()) == (0, b"through websockify")
    assert token not in websockify.logs()


@pytest.mark.parametrize("case", ["forged", "foreign origin", "no session", "other user", "replayed", "expired",
                                  "spice"])
def test_websockify_refuses_like_the_gateway(live_stack, websockify, desktop, employee, other_employee,
                                             echo_server, case):
    from datetime import timedelta

    from django.utils import timezone

    from broker.models import ConsoleTicket

    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server, "spice" if case == "spice" else "vnc")
    kwargs = {"cookie": cookie}
    if case == "forged":
        token = "forged-" + "A" * 40
    elif case == "foreign origin":
        kwargs["origin"] = "http://evil.example"
    elif case == "no session":
        kwargs["cookie"] = None
    elif case == "other user":
        kwargs["cookie"] = session_cookie(other_employee)
    elif case == "replayed":
        async def use():
            ws = await open_websockify(websockify, token, cookie=cookie)
            await vnc_login_as_noVNC(ws, echo_server.vnc_password)
            await ws.close()

        asyncio.run(use())
    elif case == "expired":
        ConsoleTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expected = {
        "forged": "4404 Console ticket is missing or invalid.",
        "foreign origin": "4403 This page's origin may not open consoles.",
        "no session": "4401 Your login session has ended. Log in again.",
        "other user": "4410 This console ticket was issued to another login session.",
        "replayed": "4409 Console ticket was already used. Reload to reconnect.",
        "expired": "4408 Console ticket expired. Reload to reconnect.",
        "spice": "4413 SPICE consoles need the broker's gateway.",
    }[case]
    assert refusal(websockify, token, **kwargs) == (403, expected)
    assert echo_server.connections == (1 if case == "replayed" else 0)
    assert token not in websockify.logs()
