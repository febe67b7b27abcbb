"""The gateway as its own process (the proxy tier): config/gateway_asgi.py under uvicorn, on
another port than the portal, validating the portal's tickets through PostgreSQL and obeying
its close messages through Redis."""

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
from websockets.exceptions import ConnectionClosed

from broker.models import ConsoleSession, Desktop
from broker.console import control as console_control
from broker.console.sessions import close_abandoned_console_sessions
from broker.console.tickets import grant_console
from tests.support.console_client import portal_ticket as ticket
from tests.support.console_client import (WebsocketBytes, open_console, refusal, session_cookie,
                                          vnc_login_as_browser)
from tests.support.gateway_tier import GatewayProcess
from tests.support.stack import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

# The ORM calls inside these tests' coroutines are plain blocking calls between socket steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def tier(live_stack):
    with GatewayProcess(live_stack, "asgi") as gateway:
        yield gateway




@pytest.fixture
def desktop(echo_desktop):
    return echo_desktop



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
    codes = {"forged": 4404, "foreign origin": 403, "no session": 403, "other user": 4410, "replayed": 4409}
    assert expected[0] == codes[case]
    assert echo_server.connections == (1 if case == "replayed" else 0)


def test_the_tier_answers_http_only_for_health_checks(tier):
    assert urlopen(f"http://127.0.0.1:{tier.port}/healthz", timeout=5).read() == b"ok\n"
    with pytest.raises(HTTPError) as error:
        urlopen(f"http://127.0.0.1:{tier.port}/admin/", timeout=5)
    assert error.value.code == 404


@pytest.mark.parametrize("tier_module", ["config.gateway_asgi", "broker.console.websockify_plugin"])
def test_the_tier_never_loads_libvirt(tier_module):
    probe = f"import sys, {tier_module}; print('libvirt' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"


def test_the_tier_refuses_a_ticket_granted_on_another_port_than_the_recorded_one(live_stack, tier, desktop,
                                                                                  employee, echo_server):
    """Without libvirt, the tier takes the port the broker recorded from the live definition
    when the VM last started; it must still be the port the grant set the password on."""
    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server, port=echo_server.port + 1)
    assert refusal(tier.endpoint, desktop.pk, token, cookie=cookie) == (
        4502, "The desktop's console moved (its VM restarted); reconnecting.")
    assert echo_server.connections == 0


def test_the_consoles_of_a_killed_gateway_stop_counting_and_are_closed(live_stack, desktop, employee, echo_server,
                                                                       pool, settings):
    """A gateway killed with consoles open cannot close their rows. They stop counting against
    the limits once the gateway misses its re-checks, and the broker closes them at their last
    sign of life, while a console held by a living gateway stays open."""
    settings.VDI_CONSOLE_RECHECK_SECONDS = 2  # as the stack's processes run
    pool.console_max_per_desktop = 1
    pool.save()
    cookie = session_cookie(employee)

    async def open_on(endpoint):
        ws = await open_console(endpoint, desktop.pk, ticket(live_stack, employee, desktop, cookie, echo_server),
                                cookie=cookie)
        await vnc_login_as_browser(ws)
        return ws

    async def scenario(doomed):
        await open_on(doomed.endpoint)
        doomed.process.kill()
        doomed.process.wait()
        dead_row = ConsoleSession.objects.get(desktop=desktop, closed_at__isnull=True)
        await asyncio.sleep(7)  # more than three missed re-checks of 2 s
        survivor = await open_on(live_stack)  # the dead console no longer takes the only place
        await asyncio.sleep(5)  # the survivor's gateway touches its row meanwhile
        closed = close_abandoned_console_sessions()
        await survivor.send(b"still here")
        echoed = await asyncio.wait_for(survivor.recv(), 5)
        await survivor.close()
        return dead_row, closed, echoed

    with GatewayProcess(live_stack, "asgi") as doomed:
        dead_row, closed, echoed = asyncio.run(scenario(doomed))
    assert (closed, echoed) == (1, b"still here")
    dead_row_now = ConsoleSession.objects.get(pk=dead_row.pk)
    assert dead_row_now.close_code == 1006 and dead_row_now.closed_at == dead_row.last_seen_at
    survivor_row = ConsoleSession.objects.exclude(pk=dead_row.pk).get(desktop=desktop)
    assert survivor_row.last_seen_at > survivor_row.opened_at + timedelta(seconds=1)


def test_a_gateway_that_cannot_reach_its_control_channel_opens_no_console(live_stack, desktop, employee,
                                                                          echo_server):
    """A console that could not hear a logout must not open: the page is told to reconnect."""
    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server)
    async def attempt(endpoint):
        ws = await open_console(endpoint, desktop.pk, token, cookie=cookie)
        try:
            while True:  # the gateway's own RFB greeting may come first
                await asyncio.wait_for(ws.recv(), 15)
        except ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason

    with GatewayProcess(live_stack, "asgi", CHANNEL_LAYER_URL="redis://127.0.0.1:9/0") as deaf:
        assert asyncio.run(attempt(deaf.endpoint)) == (
            1012, "The console could not reach its control channel; reconnecting.")
    assert not ConsoleSession.objects.filter(desktop=desktop, closed_at__isnull=True).exists()


@pytest.mark.libvirt
def test_the_tier_reaches_a_vm_whose_port_changed_behind_the_brokers_back(live_stack, tier, running_desktop,
                                                                           employee):
    """The VM got another port than the broker recorded (restarted outside it). The grant reads
    the live definition and corrects the record, so the tier, which has no libvirt, connects."""
    live_port = running_desktop.vnc_port
    Desktop.objects.filter(pk=running_desktop.pk).update(vnc_port=live_port + 1000)
    cookie = session_cookie(employee)
    token = grant_console(user=employee, session_key=cookie, desktop=Desktop.objects.get(pk=running_desktop.pk),
                          protocol="vnc", origin=live_stack.base_url).token
    assert Desktop.objects.get(pk=running_desktop.pk).vnc_port == live_port

    async def session():
        ws = await open_console(tier.endpoint, running_desktop.pk, token, cookie=cookie)
        offered = await vnc_login_as_browser(ws)
        await ws.send(b"\x01")  # ClientInit
        server_init = await WebsocketBytes(ws).read(24)
        await ws.close()
        return offered, server_init

    offered, server_init = asyncio.run(session())
    assert offered == [1] and len(server_init) == 24  # QEMU's ServerInit, after the tier's VNC login
