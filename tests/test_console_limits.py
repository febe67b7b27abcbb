"""Console limits, set per pool: consoles per user and per desktop, an idle timeout and a
maximum session length, each closing with a code and a reason the page shows."""

import asyncio
import os
import time

import pytest
from websockets.exceptions import ConnectionClosed

from broker.models import ConsoleSession
from broker.console.tickets import issue_console_ticket
from tests.support.desktops import running_desktop_on
from tests.support.console_client import open_console, session_cookie, vnc_login_as_browser

pytestmark = pytest.mark.django_db(transaction=True)

# The ORM calls inside these tests' coroutines are plain blocking calls between socket steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

KEY_A_DOWN = bytes([4, 1, 0, 0, 0, 0, 0, 0x61])
UPDATE_REQUEST = bytes([3, 1, 0, 0, 0, 0, 0, 10, 0, 10])


@pytest.fixture
def desktop(pool, employee, host, echo_server):
    return running_desktop_on(echo_server, pool=pool, user=employee, name="vditest-limits")


async def logged_in_console(stack, desktop, user, cookie, server):
    ticket = issue_console_ticket(user=user, session_key=cookie, desktop=desktop, protocol="vnc",
                                  origin=stack.base_url, console_password=server.vnc_password)
    ws = await open_console(stack, desktop.pk, ticket, cookie=cookie)
    await vnc_login_as_browser(ws)
    return ws


async def closed_with(ws, timeout=15) -> tuple[int, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code, closed.rcvd.reason


def refusal_of_one_more(stack, desktop, user, server, open_first: int) -> tuple[int, str]:
    cookie = session_cookie(user)

    async def attempt():
        first = [await logged_in_console(stack, desktop, user, cookie, server) for _ in range(open_first)]
        ticket = issue_console_ticket(user=user, session_key=cookie, desktop=desktop, protocol="vnc",
                                      origin=stack.base_url, console_password=server.vnc_password)
        ws = await open_console(stack, desktop.pk, ticket, cookie=cookie)
        result = await closed_with(ws)
        for other in first:
            await other.send(b"still open")
            assert await asyncio.wait_for(other.recv(), 5) == b"still open"
            await other.close()
        return result

    return asyncio.run(attempt())


def test_a_user_may_have_only_so_many_consoles_open(live_stack, pool, employee, host, echo_server):
    pool.console_max_per_user, pool.console_max_per_desktop = 2, 5
    pool.save()
    second_pool_desktop = running_desktop_on(echo_server, pool=pool, user=employee, name="vditest-limits-2")
    cookie = session_cookie(employee)

    async def attempt():
        first = [await logged_in_console(live_stack, second_pool_desktop, employee, cookie, echo_server)
                 for _ in range(2)]
        ticket = issue_console_ticket(user=employee, session_key=cookie, desktop=second_pool_desktop,
                                      protocol="vnc", origin=live_stack.base_url,
                                      console_password=echo_server.vnc_password)
        ws = await open_console(live_stack, second_pool_desktop.pk, ticket, cookie=cookie)
        result = await closed_with(ws)
        for other in first:
            await other.close()
        return result

    assert asyncio.run(attempt()) == (4429, "You already have 2 consoles open; close one first.")


def test_a_desktop_may_have_only_so_many_consoles_open(live_stack, desktop, pool, employee, echo_server):
    pool.console_max_per_desktop = 1
    pool.save()
    assert refusal_of_one_more(live_stack, desktop, employee, echo_server, open_first=1) == (
        4430, "This desktop already has 1 consoles open; close one first.")
    # A closed console frees its place.
    deadline = time.monotonic() + 10
    while ConsoleSession.objects.filter(closed_at__isnull=True).exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)

    async def one_again():
        ws = await logged_in_console(live_stack, desktop, employee, session_cookie(employee), echo_server)
        await ws.send(b"back")
        echoed = await asyncio.wait_for(ws.recv(), 5)
        await ws.close()
        return echoed

    assert asyncio.run(one_again()) == b"back"


def test_an_idle_console_is_closed_but_typing_keeps_it_open(live_stack, desktop, pool, employee, echo_server):
    pool.console_idle_timeout_minutes = 2 / 60  # two seconds
    pool.save()
    cookie = session_cookie(employee)

    async def session():
        ws = await logged_in_console(live_stack, desktop, employee, cookie, echo_server)
        started = time.monotonic()
        # The viewer's own update requests are not the user: they do not count as activity.
        for _ in range(3):
            await ws.send(KEY_A_DOWN)
            await asyncio.wait_for(ws.recv(), 5)
            await asyncio.sleep(1)
            await ws.send(UPDATE_REQUEST)
            await asyncio.wait_for(ws.recv(), 5)
        kept_open_for = time.monotonic() - started
        code, reason = await closed_with(ws)
        return kept_open_for, time.monotonic() - started, code, reason

    kept_open_for, closed_after, code, reason = asyncio.run(session())
    assert kept_open_for > 3  # longer than the timeout, thanks to the keys
    assert (code, reason) == (4431, "Console closed after 2 s without input. Reconnect to go on.")
    assert closed_after < kept_open_for + 4
    deadline = time.monotonic() + 5
    while (row := ConsoleSession.objects.get()).closed_at is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert row.close_code == 4431 and "without input" in row.close_reason


def test_a_console_is_closed_after_the_pools_longest_session(live_stack, desktop, pool, employee, echo_server):
    pool.console_max_session_minutes = 2 / 60
    pool.save()
    cookie = session_cookie(employee)

    async def session():
        ws = await logged_in_console(live_stack, desktop, employee, cookie, echo_server)
        started = time.monotonic()
        while True:  # busy typing all along: the limit applies anyway
            try:
                await ws.send(KEY_A_DOWN)
                await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed as closed:
                return time.monotonic() - started, closed.rcvd.code, closed.rcvd.reason
            await asyncio.sleep(0.2)

    lasted, code, reason = asyncio.run(session())
    assert 1.5 < lasted < 5
    assert (code, reason) == (4432, "Console closed: sessions last at most 2 s. Reconnect to go on.")


def test_the_page_can_measure_round_trips_and_pings_never_reach_the_desktop(live_stack, desktop, employee,
                                                                           echo_server):
    cookie = session_cookie(employee)

    async def session():
        ws = await logged_in_console(live_stack, desktop, employee, cookie, echo_server)
        await ws.send("vdi-ping 1234.5")
        pong = await asyncio.wait_for(ws.recv(), 5)
        await ws.send(b"after the ping")
        echoed = await asyncio.wait_for(ws.recv(), 5)  # the echo desktop saw only this
        await ws.close()
        return pong, echoed

    assert asyncio.run(session()) == ("vdi-pong 1234.5", b"after the ping")
