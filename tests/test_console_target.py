"""Where a console connects is resolved on the server when it connects: from the desktop's
live definition on its host (libvirt's test driver here; QEMU's real ports in
test_console_gateway.py), never from the browser and not from a stale row, and only if the
port is still the one the ticket's one-time password was set on."""

import asyncio

import pytest

from broker.models import Desktop, DesktopState
from tests.support.console_client import portal_ticket as ticket
from tests.support.console_client import open_console, refusal, session_cookie, vnc_login_as_browser
from tests.support.desktops import running_desktop_on, libvirt_test_node_host
from tests.support.stream_server import StreamServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def decoy():
    """Another console port: what a stale record or an old grant points at."""
    with StreamServer("echo") as server:
        yield server



def test_it_connects_where_the_live_definition_says_not_where_the_row_says(live_stack, pool, employee,
                                                                            echo_server, decoy):
    desktop = running_desktop_on(echo_server, pool=pool, user=employee, name="vditest-live-port")
    Desktop.objects.filter(pk=desktop.pk).update(vnc_port=decoy.port)  # the broker's record went stale
    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server)

    async def session():
        ws = await open_console(live_stack, desktop.pk, token, cookie=cookie)
        await vnc_login_as_browser(ws)
        await ws.send(b"which desktop?")
        echoed = await asyncio.wait_for(ws.recv(), 5)
        await ws.close()
        return echoed

    assert asyncio.run(session()) == b"which desktop?"
    assert (echo_server.logins, decoy.connections) == (1, 0)


def test_it_refuses_when_the_vm_restarted_on_another_port_since_the_grant(live_stack, pool, employee,
                                                                          echo_server, decoy):
    """The grant set the password on the domain listening on decoy's port; now the live
    definition says another port. Whatever listens on either, the gateway connects to neither."""
    desktop = running_desktop_on(echo_server, pool=pool, user=employee, name="vditest-moved")
    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server, port=decoy.port)
    assert refusal(live_stack, desktop.pk, token, cookie=cookie) == (
        4502, "The desktop's console moved (its VM restarted); reconnecting.")
    assert (echo_server.connections, decoy.connections) == (0, 0)


def test_it_refuses_a_desktop_whose_vm_no_longer_exists(live_stack, pool, employee, echo_server):
    host = libvirt_test_node_host(name="vditest-another-vm", vnc_port=echo_server.port)
    desktop = Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                     name="vditest-vanished", state=DesktopState.RUNNING, vnc_port=echo_server.port)
    cookie = session_cookie(employee)
    token = ticket(live_stack, employee, desktop, cookie, echo_server)
    assert refusal(live_stack, desktop.pk, token, cookie=cookie) == (4412, "The desktop's VM no longer exists.")
    assert echo_server.connections == 0
