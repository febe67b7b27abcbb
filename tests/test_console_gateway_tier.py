"""The gateway as its own process (the proxy tier): config/gateway_asgi.py under uvicorn, on
another port than the portal, validating the portal's tickets through PostgreSQL and obeying
its close messages through Redis."""

import asyncio
import subprocess
import sys
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
from websockets.exceptions import ConnectionClosed

from broker.services import console_control
from broker.services.tickets import issue_console_ticket
from tests.support.console_client import open_console, refusal, session_cookie, vnc_login_as_browser
from tests.support.gateway_tier import GatewayProcess
from tests.support.stack import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tier(live_stack):
    with GatewayProcess(live_stack, "asgi") as gateway:
        yield gateway




@pytest.fixture
def desktop(echo_desktop):
    return echo_desktop


def ticket(stack, user, desktop, cookie, server):
    return issue_console_ticket(user=user, session_key=cookie, desktop=desktop, protocol="vnc",
                                origin=stack.base_url, console_password=server.vnc_password)


def test_the_tier_relays_a_console_opened_from_the_portals_page(live_stack, tier, desktop, employee, echo_server):
    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server)

    async def session():
        ws = await open_console(tier.endpoint, desktop.pk, token, cookie=cookie)
        assert await vnc_login_as_browser(ws) == [1]
        await ws.send(b"through the tier")
        echoed = await asyncio.wait_for(ws.recv(), 5)
        # Closing from the portal's side (a logout, a lost entitlement) reaches the tier.
        await asyncio.get_running_loop().run_in_executor(None, lambda: console_control.close_consoles(
            group=console_control.desktop_group(desktop.pk), code=4500, reason="The desktop was reset."))
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return echoed, (closed.rcvd.code, closed.rcvd.reason)

    assert asyncio.run(session()) == (b"through the tier", (4500, "The desktop was reset."))
    assert echo_server.logins == 1


@pytest.mark.parametrize("case", ["forged", "foreign origin", "no session", "other user", "replayed"])
def test_the_tier_refuses_like_the_portal(live_stack, tier, desktop, employee, other_employee, echo_server, case):
    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server)
    if case == "forged":
        expected = refusal(tier.endpoint, desktop.pk, "forged-" + "A" * 40, cookie=cookie)
    elif case == "foreign origin":
        expected = refusal(tier.endpoint, desktop.pk, token, cookie=cookie, origin="http://evil.example")
    elif case == "no session":
        expected = refusal(tier.endpoint, desktop.pk, token, cookie=None)
    elif case == "other user":
        expected = refusal(tier.endpoint, desktop.pk, token, cookie=session_cookie(other_employee))
    else:
        async def use():
            ws = await open_console(tier.endpoint, desktop.pk, token, cookie=cookie)
            await vnc_login_as_browser(ws)
            await ws.close()

        asyncio.run(use())
        expected = refusal(tier.endpoint, desktop.pk, token, cookie=cookie)
    codes = {"forged": 4404, "foreign origin": 4403, "no session": 4401, "other user": 4410, "replayed": 4409}
    assert expected[0] == codes[case]
    assert echo_server.connections == (1 if case == "replayed" else 0)


def test_the_tier_answers_http_only_for_health_checks(tier):
    assert urlopen(f"http://127.0.0.1:{tier.port}/healthz", timeout=5).read() == b"ok\n"
    with pytest.raises(HTTPError) as error:
        urlopen(f"http://127.0.0.1:{tier.port}/admin/", timeout=5)
    assert error.value.code == 404


def test_the_tier_never_loads_libvirt():
    probe = "import sys, config.gateway_asgi; print('libvirt' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"
