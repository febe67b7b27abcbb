"""The console websocket, served by the real uvicorn: it relays a VM's VNC stream only for a
valid ticket of this user, this login session, this desktop and this site."""

import asyncio
import struct
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from broker.models import ConsoleSession, ConsoleTicket, Desktop, DesktopState, Entitlement
from broker.console.tickets import grant_console
from tests.support.console_client import portal_ticket as ticket_for
from tests.support.console_client import WebsocketBytes, open_console, refusal, session_cookie, vnc_login_as_browser
from tests.support.desktops import running_desktop_on
from tests.support.measurements import write_measurement
from tests.support.stream_server import BANNER, StreamServer

pytestmark = pytest.mark.django_db(transaction=True)




@pytest.fixture
def fake_desktop(echo_desktop):
    return echo_desktop



@pytest.mark.libvirt
def test_it_relays_a_real_vms_vnc_stream(live_stack, running_desktop, employee):
    cookie = session_cookie(employee)
    ticket = grant_console(user=employee, session_key=cookie, desktop=running_desktop, protocol="vnc",
                           origin=live_stack.base_url).token

    async def session():
        ws = await open_console(live_stack, running_desktop.pk, ticket, cookie=cookie)
        assert ws.subprotocol == "binary"
        assert "Sec-WebSocket-Extensions" not in ws.response.headers  # no per-message compression
        offered = await vnc_login_as_browser(ws)
        await ws.send(b"\x01")  # ClientInit (shared)
        server_init = await WebsocketBytes(ws).read(24)  # QEMU's ServerInit, after the gateway's login
        await ws.close()
        return offered, server_init

    offered, server_init = asyncio.run(session())
    # The browser is offered "None": the gateway answered QEMU's VNC authentication itself.
    assert offered == [1]
    width, height = struct.unpack(">HH", server_init[:4])
    assert width >= 640 and height >= 400
    deadline = time.monotonic() + 10
    while ConsoleSession.objects.filter(desktop=running_desktop, closed_at__isnull=True).exists():
        assert time.monotonic() < deadline, f"the console session row was not closed: {list(ConsoleSession.objects.values())}"
        time.sleep(0.1)
    session_row = ConsoleSession.objects.get(desktop=running_desktop)
    assert session_row.user == employee and session_row.bytes_to_desktop == 14  # version, choice, init


def test_it_copies_what_the_browser_types_to_the_desktop(live_stack, fake_desktop, employee, echo_server):
    cookie = session_cookie(employee)
    ticket = ticket_for(live_stack, employee, fake_desktop, cookie, echo_server)

    async def session():
        ws = await open_console(live_stack, fake_desktop.pk, ticket, cookie=cookie)
        assert await vnc_login_as_browser(ws) == [1]
        await ws.send(b"keys typed in the browser")
        echoed = await asyncio.wait_for(ws.recv(), 10)
        await ws.close()
        return echoed

    assert asyncio.run(session()) == b"keys typed in the browser"
    assert (echo_server.logins, echo_server.logins_refused) == (1, 0)


def test_it_refuses_a_forged_ticket(live_stack, fake_desktop, employee):
    cookie = session_cookie(employee)
    assert refusal(live_stack, fake_desktop.pk, "forged-" + "A" * 40, cookie=cookie) == (
        4404, "Console ticket is missing or invalid.")


def test_it_refuses_a_missing_ticket(live_stack, fake_desktop, employee):
    assert refusal(live_stack, fake_desktop.pk, "", cookie=session_cookie(employee))[0] == 4404


def test_it_refuses_an_expired_ticket(live_stack, fake_desktop, employee):
    cookie = session_cookie(employee)
    ticket = ticket_for(live_stack, employee, fake_desktop, cookie)
    ConsoleTicket.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert refusal(live_stack, fake_desktop.pk, ticket, cookie=cookie) == (
        4408, "Console ticket expired. Reload to reconnect.")


def test_it_refuses_a_replayed_ticket(live_stack, fake_desktop, employee):
    cookie = session_cookie(employee)
    ticket = ticket_for(live_stack, employee, fake_desktop, cookie)

    async def first_use():
        ws = await open_console(live_stack, fake_desktop.pk, ticket, cookie=cookie)
        assert await ws.recv() == BANNER
        await ws.close()

    asyncio.run(first_use())
    assert refusal(live_stack, fake_desktop.pk, ticket, cookie=cookie) == (
        4409, "Console ticket was already used. Reload to reconnect.")


def test_it_refuses_another_users_ticket(live_stack, fake_desktop, employee, other_employee):
    ticket = ticket_for(live_stack, employee, fake_desktop, session_cookie(employee))
    assert refusal(live_stack, fake_desktop.pk, ticket, cookie=session_cookie(other_employee)) == (
        4410, "This console ticket was issued to another login session.")
    # The attempt did not burn the owner's ticket.
    assert ConsoleTicket.objects.get().used_at is None


def test_it_refuses_the_same_users_ticket_from_another_login_session(live_stack, fake_desktop, employee):
    ticket = ticket_for(live_stack, employee, fake_desktop, session_cookie(employee))
    assert refusal(live_stack, fake_desktop.pk, ticket, cookie=session_cookie(employee))[0] == 4410


def test_it_refuses_a_ticket_for_another_desktop(live_stack, fake_desktop, employee, pool, host, echo_server):
    cookie = session_cookie(employee)
    ticket = ticket_for(live_stack, employee, fake_desktop, cookie)
    Desktop.objects.filter(pk=fake_desktop.pk).update(state=DesktopState.DELETED)
    second = running_desktop_on(echo_server, pool=pool, user=employee, name="vditest-fake-2")
    assert refusal(live_stack, second.pk, ticket, cookie=cookie)[0] == 4404
    assert echo_server.connections == 0


def test_it_refuses_a_foreign_origin(live_stack, fake_desktop, employee):
    cookie = session_cookie(employee)
    ticket = ticket_for(live_stack, employee, fake_desktop, cookie)
    assert refusal(live_stack, fake_desktop.pk, ticket, cookie=cookie, origin="http://evil.example") == (
        403, "4403 This page's origin may not open consoles.")


def test_it_refuses_a_connection_without_a_login_session(live_stack, fake_desktop, employee):
    ticket = ticket_for(live_stack, employee, fake_desktop, session_cookie(employee))
    assert refusal(live_stack, fake_desktop.pk, ticket, cookie=None) == (
        403, "4401 Your login session has ended. Log in again.")


def test_it_refuses_a_user_who_lost_the_entitlement(live_stack, fake_desktop, employee):
    cookie = session_cookie(employee)
    ticket = ticket_for(live_stack, employee, fake_desktop, cookie)
    Entitlement.objects.all().delete()
    employee.groups.remove(*Group.objects.all())
    assert refusal(live_stack, fake_desktop.pk, ticket, cookie=cookie)[0] == 4411


def test_it_refuses_a_desktop_that_stopped(live_stack, fake_desktop, employee):
    cookie = session_cookie(employee)
    ticket = ticket_for(live_stack, employee, fake_desktop, cookie)
    Desktop.objects.filter(pk=fake_desktop.pk).update(state=DesktopState.STOPPED)
    assert refusal(live_stack, fake_desktop.pk, ticket, cookie=cookie) == (4412, "The desktop is powered off.")


def test_tickets_never_reach_the_logs(live_stack, fake_desktop, employee):
    cookie = session_cookie(employee)
    tickets = []
    for _ in range(2):
        ticket = ticket_for(live_stack, employee, fake_desktop, cookie)
        tickets.append(ticket)
        refusal(live_stack, fake_desktop.pk, ticket, cookie=None)
    good = ticket_for(live_stack, employee, fake_desktop, cookie)
    tickets.append(good)

    async def use():
        ws = await open_console(live_stack, fake_desktop.pk, good, cookie=cookie)
        await ws.recv()
        await ws.close()

    asyncio.run(use())
    time.sleep(0.5)
    logs = live_stack.logs()
    assert "console refused" in logs and "console opened" in logs  # the events are logged...
    for ticket in tickets:
        assert ticket not in logs  # ...the tickets are not
    assert not ConsoleTicket.objects.filter(token_hash__in=tickets).exists()  # stored only hashed


def test_a_slow_browser_slows_the_desktop_down_instead_of_filling_memory(live_stack, pool, employee, host):
    with StreamServer("flood") as flood:
        desktop = running_desktop_on(flood, pool=pool, user=employee, name="vditest-flood")
        cookie = session_cookie(employee)
        ticket = ticket_for(live_stack, employee, desktop, cookie, flood)

        async def stalled_reader():
            ws = await open_console(live_stack, desktop.pk, ticket, cookie=cookie)
            await vnc_login_as_browser(ws)
            # Stop reading. A relay without backpressure would read the flood into memory at
            # loopback speed (gigabytes); with it, the flood stalls once socket buffers fill.
            await asyncio.sleep(2)
            at_2s = flood.bytes_sent
            await asyncio.sleep(2)
            at_4s = flood.bytes_sent
            # Reading again lets the flood continue.
            received = 0
            while received < 8 * 2**20:
                received += len(await asyncio.wait_for(ws.recv(), 10))
            await ws.close()
            return at_2s, at_4s, received

        at_2s, at_4s, received = asyncio.run(stalled_reader())
    write_measurement("backpressure: bytes the desktop could send to a stalled browser (MB)",
                      round(at_4s / 2**20, 1))
    assert at_4s < 64 * 2**20, f"{at_4s / 2**20:.0f} MB left the desktop while the browser read nothing"
    assert at_4s - at_2s < 2 * 2**20, "the flood was still flowing into the gateway while the browser read nothing"
    assert received >= 8 * 2**20
