"""Fault: a hypervisor's libvirtd restarted (the second daemon, as a host of its own) while a
console is open and while a launch is being provisioned there. QEMU outlives its daemon: the
open console goes on; a new console is refused with a reason and works once it is back; the
launch is retried until the daemon answers and runs; nothing is left orphaned."""

import asyncio
import os
import struct
import subprocess
import time

import pytest

from broker.console.close_codes import CloseCode, ConsoleRefused
from broker.console.tickets import grant_console
from broker.models import Desktop, DesktopState, Host
from broker.services.assignment import launch_desktop
from broker.services.hosts import reconcile_host
from tests.conftest import SECOND_DAEMON
from tests.support.console_client import WebsocketBytes, open_console, session_cookie, vnc_login_as_browser
from tests.support.stack import ROOT
from tests.support.waiting import wait_for_state

pytestmark = [pytest.mark.faults, pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
S = DesktopState
DAEMON = str(ROOT / "scripts/start-second-libvirtd.sh")
FRAMEBUFFER_UPDATE_REQUEST = b"\x03\x00\x00\x00\x00\x00\x00\x10\x00\x10"  # incremental=0, 16×16 at 0,0


def test_a_restarted_libvirtd_keeps_open_consoles_and_finishes_a_launch(live_stack, two_hosts, pool, employee,
                                                                         other_employee):
    first, second = two_hosts
    Host.objects.filter(pk=first.pk).update(is_enabled=False)  # everything goes to the second host
    desktop = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING, timeout=120)
    assert desktop.host_id == second.pk
    cookie = session_cookie(employee)

    def grant():
        return grant_console(user=employee, session_key=cookie, desktop=Desktop.objects.get(pk=desktop.pk),
                             protocol="vnc", origin=live_stack.base_url).token

    async def through_the_outage():
        ws = await open_console(live_stack, desktop.pk, await asyncio.to_thread(grant), cookie=cookie)
        assert await vnc_login_as_browser(ws) == [1]
        await ws.send(b"\x01")  # ClientInit
        stream = WebsocketBytes(ws)
        header = await stream.read(24)  # ServerInit: size, pixel format, name length
        await stream.read(struct.unpack(">I", header[20:24])[0])
        await asyncio.to_thread(subprocess.run, [DAEMON, "--stop", SECOND_DAEMON], timeout=60, check=True)
        try:
            # The console does not go through libvirt: it goes on answering.
            await ws.send(FRAMEBUFFER_UPDATE_REQUEST)
            assert (await asyncio.wait_for(ws.recv(), 10))
            # A new console needs the host's libvirt (its one-time password): refused, with a reason.
            with pytest.raises(ConsoleRefused) as refused:
                await asyncio.to_thread(grant)
            assert refused.value.code == CloseCode.DESKTOP_UNREACHABLE and "try again" in refused.value.reason
            # A launch now: its provisioning finds the daemon away and is retried.
            launched = await asyncio.to_thread(launch_desktop, user=other_employee, pool=pool)
            await asyncio.sleep(3)
        finally:
            await asyncio.to_thread(subprocess.run, [DAEMON, SECOND_DAEMON], capture_output=True, timeout=60,
                                    check=True)
        await ws.send(FRAMEBUFFER_UPDATE_REQUEST)
        assert (await asyncio.wait_for(ws.recv(), 10))  # the same console, still open
        await ws.close()
        return launched

    started = time.monotonic()
    launched = asyncio.run(through_the_outage())
    second_desktop = wait_for_state(launched, S.RUNNING, timeout=120)
    assert second_desktop.host_id == second.pk
    print(f"launch through a libvirtd restart took {time.monotonic() - started:.1f} s")
    assert grant()  # consoles are granted again

    done = reconcile_host(host_id=second.pk)
    assert not (done["orphan_domains"] or done["orphan_volumes"] or done["stale_copies"] or done["vanished"]), done
    events = [message for message, in second_desktop.events.values_list("message")]
    assert not any("failed" in message for message in events), events
