"""Losing an entitlement closes the user's consoles at once and schedules their desktop's
deletion after the pool's grace period; logging out closes that login's consoles."""

import asyncio
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed

from broker.models import Desktop, DesktopState, Entitlement
from broker.console.tickets import issue_console_ticket
from broker.tasks import delete_desktops_past_their_hold_task
from tests.support.threads import closing_connection
from tests.support.console_client import open_console, vnc_login_as_browser

pytestmark = pytest.mark.django_db(transaction=True)




@pytest.fixture
def desktop(echo_desktop):
    return echo_desktop


def logged_in_client(user) -> Client:
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


def console_closed_by(stack, desktop, user, client, action, server) -> tuple[int, str]:
    """Open a console, run `action` while it is open, return how the gateway closed it."""
    cookie = client.cookies["sessionid"].value
    ticket = issue_console_ticket(user=user, session_key=cookie, desktop=desktop, protocol="vnc",
                                  origin=stack.base_url, console_password=server.vnc_password)

    async def session():
        ws = await open_console(stack, desktop.pk, ticket, cookie=cookie)
        await vnc_login_as_browser(ws)
        await asyncio.sleep(0.3)  # the gateway has joined its control groups
        await asyncio.get_running_loop().run_in_executor(None, closing_connection(action))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason

    return asyncio.run(session())


def test_leaving_the_group_closes_the_console_and_schedules_deletion(live_stack, desktop, employee,
                                                                    employees_group, echo_server):
    client = logged_in_client(employee)
    before = timezone.now()
    code, reason = console_closed_by(live_stack, desktop, employee, client,
                                     lambda: employee.groups.remove(employees_group), echo_server)
    assert (code, reason) == (4411, "Your access to this desktop was withdrawn.")
    desktop.refresh_from_db()
    assert before + timedelta(hours=71) < desktop.delete_after < timezone.now() + timedelta(hours=73)
    assert desktop.state == DesktopState.RUNNING  # kept during the grace period
    assert desktop.events.filter(message__contains="lost access").exists()


def test_rejoining_within_the_grace_period_cancels_the_deletion(desktop, employee, employees_group):
    employee.groups.remove(employees_group)
    desktop.refresh_from_db()
    assert desktop.delete_after is not None
    employee.groups.add(employees_group)
    desktop.refresh_from_db()
    assert desktop.delete_after is None


def test_the_pool_sets_the_grace_period(desktop, employee, employees_group, pool):
    pool.revoked_desktop_grace_hours = 0.5
    pool.save()
    employee.groups.remove(employees_group)
    desktop.refresh_from_db()
    assert desktop.delete_after < timezone.now() + timedelta(minutes=31)


def test_deleting_the_entitlement_holds_the_desktop(desktop, pool):
    Entitlement.objects.filter(pool=pool).delete()
    desktop.refresh_from_db()
    assert desktop.delete_after is not None


def test_a_user_entitled_another_way_keeps_the_desktop(desktop, employee, employees_group, pool):
    Entitlement.objects.create(pool=pool, user=employee)
    employee.groups.remove(employees_group)
    desktop.refresh_from_db()
    assert desktop.delete_after is None


def test_deactivating_a_user_holds_their_desktop(desktop, employee):
    employee.is_active = False
    employee.save(update_fields=["is_active"])
    desktop.refresh_from_db()
    assert desktop.delete_after is not None


def test_logging_out_closes_that_logins_consoles_only(live_stack, desktop, employee, echo_server):
    other_login = logged_in_client(employee)
    other_cookie = other_login.cookies["sessionid"].value
    other_ticket = issue_console_ticket(user=employee, session_key=other_cookie, desktop=desktop, protocol="vnc",
                                        origin=live_stack.base_url, console_password=echo_server.vnc_password)
    client = logged_in_client(employee)

    async def other_console_survives():
        ws = await open_console(live_stack, desktop.pk, other_ticket, cookie=other_cookie)
        await vnc_login_as_browser(ws)
        return ws

    loop = asyncio.new_event_loop()
    try:
        other = loop.run_until_complete(other_console_survives())
        code, reason = console_closed_by(live_stack, desktop, employee, client, client.logout, echo_server)
        assert (code, reason) == (4401, "You logged out.")
        loop.run_until_complete(other.send(b"still here"))
        assert loop.run_until_complete(asyncio.wait_for(other.recv(), 5)) == b"still here"
        loop.run_until_complete(other.close())
    finally:
        loop.close()


@pytest.mark.libvirt
def test_a_desktop_past_its_hold_is_deleted_by_the_periodic_job(live_stack, running_desktop):
    from broker.hypervisor import driver_for_uri

    Desktop.objects.filter(pk=running_desktop.pk).update(delete_after=timezone.now() - timedelta(seconds=1))
    delete_desktops_past_their_hold_task.apply()  # enqueues the deletion for the real worker
    deadline = time.monotonic() + 60
    while Desktop.objects.get(pk=running_desktop.pk).state != DesktopState.DELETED:
        assert time.monotonic() < deadline, "the worker did not delete the desktop"
        time.sleep(0.2)
    assert running_desktop.name not in {d.name for d in driver_for_uri("qemu:///system").list_domains()}


def test_a_console_whose_login_vanished_without_a_message_is_closed_by_the_recheck(live_stack, desktop, employee,
                                                                                  echo_server):
    """A lost "close" message (Redis restarted, a queue overflowed) must not keep a console
    open: the gateway re-checks the login and the entitlement periodically (2 s in tests)."""
    from django.contrib.sessions.models import Session

    client = logged_in_client(employee)
    code, reason = console_closed_by(live_stack, desktop, employee, client,
                                     lambda: Session.objects.all().delete(),  # no signal, no message
                                     echo_server)
    assert (code, reason) == (4401, "You logged out.")
