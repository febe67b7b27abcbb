"""SPICE tickets: one console is one websocket per channel to the same URL. The ticket admits the
main channel first, then each other channel once, for the same login, within seconds."""

import asyncio
import os
import struct
from datetime import timedelta

import pytest
from django.utils import timezone

from broker.console import spice
from broker.models import ConsoleSession, ConsoleTicket
from broker.console.tickets import issue_console_ticket
from tests.support.console_client import open_console, session_cookie
from tests.support.desktops import running_desktop_on
from tests.support.stream_server import StreamServer

pytestmark = pytest.mark.django_db(transaction=True)

# The ORM calls inside these tests' coroutines are plain blocking calls between socket steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def spice_server():
    with StreamServer("echo", rfb=False) as server:  # echoes the link message back
        yield server


@pytest.fixture
def spice_desktop(pool, employee, host, spice_server):
    return running_desktop_on(spice_server=spice_server, pool=pool, user=employee, name="vditest-spice")


def link_message(channel_type: int) -> bytes:
    mess = struct.pack("<IBBIII", 0, channel_type, 0, 0, 0, 18)
    return spice.HEADER.pack(spice.MAGIC, 2, 2, len(mess)) + mess


async def open_channel(stack, desktop, ticket, cookie, channel_type):
    """Open one channel socket; returns ("open", None) or ("closed", (code, reason))."""
    from websockets.exceptions import ConnectionClosed

    ws = await open_console(stack, desktop.pk, ticket, cookie=cookie)
    try:
        # A refused ticket may close the socket before the link message is sent: the gateway
        # checks it before the websocket opens.
        await ws.send(link_message(channel_type))
        echoed = await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as closed:
        return "closed", (closed.rcvd.code, closed.rcvd.reason), None
    assert echoed == link_message(channel_type)  # reached the desktop unchanged
    return "open", None, ws


def spice_ticket(stack, user, desktop, cookie):
    return issue_console_ticket(user=user, session_key=cookie, desktop=desktop, protocol="spice",
                                origin=stack.base_url)


def test_a_spice_ticket_admits_main_then_each_channel_once(live_stack, spice_desktop, employee):
    cookie = session_cookie(employee)
    ticket = spice_ticket(live_stack, employee, spice_desktop, cookie)

    async def console():
        results, sockets = {}, []
        for name, channel in [("main", spice.CHANNEL_MAIN), ("display", spice.CHANNEL_DISPLAY),
                              ("inputs", spice.CHANNEL_INPUTS), ("cursor", spice.CHANNEL_CURSOR),
                              ("second display", spice.CHANNEL_DISPLAY), ("second main", spice.CHANNEL_MAIN)]:
            state, closed, ws = await open_channel(live_stack, spice_desktop, ticket, cookie, channel)
            results[name] = state if closed is None else closed
            if ws:
                sockets.append(ws)
        for ws in sockets:
            await ws.close()
        return results

    results = asyncio.run(console())
    assert results["main"] == results["display"] == results["inputs"] == results["cursor"] == "open"
    refused = (4413, "This console ticket does not admit that SPICE channel.")
    assert results["second display"] == refused
    assert results["second main"] == refused
    # One console, not four: only the main channel has a session row.
    assert ConsoleSession.objects.filter(desktop=spice_desktop).count() == 1


def test_a_spice_ticket_must_start_with_the_main_channel(live_stack, spice_desktop, employee, spice_server):
    cookie = session_cookie(employee)
    ticket = spice_ticket(live_stack, employee, spice_desktop, cookie)
    state, closed, _ = asyncio.run(open_channel(live_stack, spice_desktop, ticket, cookie, spice.CHANNEL_DISPLAY))
    assert closed == (4413, "This console ticket does not admit that SPICE channel.")
    assert spice_server.connections == 0


def test_a_spice_ticket_admits_no_channel_after_its_window(live_stack, spice_desktop, employee):
    cookie = session_cookie(employee)
    ticket = spice_ticket(live_stack, employee, spice_desktop, cookie)

    async def late_channel():
        state, _closed, main = await open_channel(live_stack, spice_desktop, ticket, cookie, spice.CHANNEL_MAIN)
        assert state == "open"
        ConsoleTicket.objects.update(used_at=timezone.now() - timedelta(seconds=11))
        result = await open_channel(live_stack, spice_desktop, ticket, cookie, spice.CHANNEL_INPUTS)
        await main.close()
        return result[1]

    assert asyncio.run(late_channel()) == (4409, "Console ticket was already used. Reload to reconnect.")


def test_a_spice_channel_from_another_login_is_refused(live_stack, spice_desktop, employee):
    cookie = session_cookie(employee)
    ticket = spice_ticket(live_stack, employee, spice_desktop, cookie)

    async def intruder():
        state, _closed, main = await open_channel(live_stack, spice_desktop, ticket, cookie, spice.CHANNEL_MAIN)
        assert state == "open"
        result = await open_channel(live_stack, spice_desktop, ticket, session_cookie(employee),
                                    spice.CHANNEL_INPUTS)
        await main.close()
        return result[1]

    assert asyncio.run(intruder()) == (4410, "This console ticket was issued to another login session.")


def test_a_socket_that_is_not_spice_is_refused(live_stack, spice_desktop, employee, spice_server):
    cookie = session_cookie(employee)
    ticket = spice_ticket(live_stack, employee, spice_desktop, cookie)

    async def not_spice():
        from websockets.exceptions import ConnectionClosed

        ws = await open_console(live_stack, spice_desktop.pk, ticket, cookie=cookie)
        await ws.send(b"RFB 003.008\n" + b"\0" * 16)
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason

    assert asyncio.run(not_spice()) == (4413, "This is not a SPICE client.")
    assert spice_server.connections == 0
