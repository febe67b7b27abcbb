"""Fault: a browser that vanishes without a close frame. Either its process dies (the kernel
closes the socket: FIN or RST, no websocket close), or it goes silent (laptop lid shut, Wi-Fi
gone: nothing at all arrives any more). The gateway must notice both, close the console
session rows, and a floating desktop must then be reset after its pool's disconnect timeout."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from broker.console.tickets import grant_console
from broker.hypervisor import driver_for_uri
from broker.models import ConsoleSession, Desktop, DesktopState, Pool
from broker.selectors import pick_host
from broker.services.desktop_sessions import enforce_disconnect_timeouts
from broker.services.provisioning import new_desktop, provision_desktop
from tests.support.console_client import session_cookie, vnc_login_as_browser
from tests.support.fault_stack import FaultStack
from tests.support.stack import ROOT
from tests.support.waiting import wait_for_state, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]
S = DesktopState
PING_SECONDS = 1

BROWSER = """
import asyncio, sys
from websockets.asyncio.client import connect
from tests.support.console_client import vnc_login_as_browser

async def main(url, origin, cookie):
    ws = await connect(url, origin=origin, additional_headers={"Cookie": cookie}, subprotocols=["binary"],
                       max_size=None)
    await vnc_login_as_browser(ws)
    await ws.send(b"\\x01")  # ClientInit
    await ws.recv()
    print("open", flush=True)
    await asyncio.sleep(600)

asyncio.run(main(*sys.argv[1:]))
"""


class BlackHole:
    """A TCP relay to the portal that, once `silence()` is called, forwards nothing more in
    either direction and closes nothing: a client that is simply gone from the network."""

    def __init__(self, port: int):
        self.upstream_port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.silent = threading.Event()
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.sockets += [client, upstream]
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source, target):
        while data := source.recv(65536):
            if not self.silent.is_set():
                target.sendall(data)

    def silence(self):
        self.silent.set()

    def close(self):
        for sock in [self.listener, *self.sockets]:
            sock.close()


@pytest.fixture(scope="module")
def pinging_portal(django_db_blocker):
    """A portal that pings browsers every second (production: 20 s); the session's live
    stack's worker runs the tasks."""
    stack = FaultStack("vanished", env={"VDI_WS_PING_SECONDS": str(PING_SECONDS)}, worker=False)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def floating_desktop(floating, employee, host):
    floating.disconnect_timeout_minutes = 1
    floating.save(update_fields=["disconnect_timeout_minutes"])
    desktop = new_desktop(pool=floating, host=pick_host(pool=floating), version=floating.image.current_version(),
                          user=employee)
    return provision_desktop(desktop_id=desktop.pk)


def test_a_vanished_browser_closes_its_console_and_the_floating_desktop_is_reset(
        live_stack, pinging_portal, floating_desktop, employee):
    desktop = floating_desktop
    assert desktop.state == S.RUNNING
    cookie = session_cookie(employee)
    cookie_header = f"{settings.SESSION_COOKIE_NAME}={cookie}"

    # One console in a browser process that is then killed: the kernel closes its socket,
    # no websocket close frame is ever sent.
    ticket = grant_console(user=employee, session_key=cookie, desktop=desktop, protocol="vnc",
                           origin=pinging_portal.base_url).token
    browser = subprocess.Popen(
        [sys.executable, "-c", BROWSER, f"ws://127.0.0.1:{pinging_portal.port}/ws/console/{desktop.pk}/?ticket={ticket}",
         pinging_portal.base_url, cookie_header], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"})
    assert browser.stdout.readline().strip() == "open"

    # Another through a link that goes silent: nothing arrives any more, nothing is closed.
    hole = BlackHole(pinging_portal.port)
    origin = f"http://127.0.0.1:{hole.port}"
    ticket = grant_console(user=employee, session_key=cookie, desktop=desktop, protocol="vnc", origin=origin).token

    async def open_then_go_silent():
        from websockets.asyncio.client import connect

        ws = await connect(f"ws://127.0.0.1:{hole.port}/ws/console/{desktop.pk}/?ticket={ticket}", origin=origin,
                           additional_headers={"Cookie": cookie_header}, subprotocols=["binary"], max_size=None,
                           ping_interval=None)
        await vnc_login_as_browser(ws)
        hole.silence()
        return ws

    silent_ws = asyncio.run(open_then_go_silent())
    assert ConsoleSession.objects.filter(desktop=desktop, closed_at__isnull=True).count() == 2

    browser.send_signal(signal.SIGKILL)
    browser.wait()
    try:
        # The gateway notices both by itself: the dead one at once, the silent one when its
        # pings go unanswered (VDI_WS_PING_SECONDS), long before the broker's abandoned-row pass.
        wait_until(lambda: not ConsoleSession.objects.filter(desktop=desktop, closed_at__isnull=True).exists(),
                   timeout=5 * PING_SECONDS + 10, what="both console rows closed")
    finally:
        hole.close()
    rows = list(ConsoleSession.objects.filter(desktop=desktop).order_by("pk").values_list("close_code", "close_reason"))
    assert [code for code, _reason in rows] == [1006, 1006], rows

    # Nobody is connected: after the pool's disconnect timeout the floating desktop is reset.
    assert enforce_disconnect_timeouts(now=timezone.now() + timedelta(seconds=30)) == 0
    assert enforce_disconnect_timeouts(now=timezone.now() + timedelta(minutes=1, seconds=5)) == 1
    wait_for_state(desktop, S.DELETED, timeout=60)
    desktop.refresh_from_db()
    assert desktop.user is None  # the next launch gets a fresh desktop, never this one
    assert desktop.name not in {d.name for d in driver_for_uri("qemu:///system").list_domains()}
    del silent_ws
