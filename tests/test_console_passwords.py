"""Per-session console passwords on real VMs: QEMU refuses anyone without the one-time password,
the gateway logs in with it, the browser never gets it, and no log shows it."""

import asyncio
import struct
import subprocess
import time

import pytest
from django.test import override_settings

from broker.console import rfb
from broker.models import ConsoleTicket
from broker.console.tickets import grant_console, unseal_password
from tests.support.console_client import WebsocketBytes, open_console, session_cookie, vnc_login_as_browser

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.libvirt]


def live_password(domain: str, protocol: str) -> str | None:
    """What QEMU holds now, read as an admin would (virsh, secure XML)."""
    import xml.etree.ElementTree as ET

    xml = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", "--security-info", domain],
                         check=True, capture_output=True, text=True).stdout
    for graphics in ET.fromstring(xml).findall("./devices/graphics"):
        if graphics.get("type") == protocol:
            return graphics.get("passwd")
    return None


async def direct_vnc_login(port: int, password: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await rfb.authenticate_to_desktop(reader, writer, password)
        return "logged in"
    except rfb.HandshakeFailed as failed:
        return str(failed)
    finally:
        writer.close()


async def offered_security_types(port: int) -> list[int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readexactly(12)
        writer.write(rfb.VERSION_38)
        (count,) = await reader.readexactly(1)
        return list(await reader.readexactly(count))
    finally:
        writer.close()


def test_a_desktops_vnc_port_refuses_anyone_without_the_one_time_password(running_desktop):
    port = running_desktop.vnc_port
    # From its first boot on, the domain has a password nobody was told.
    assert live_password(running_desktop.name, "vnc")
    assert asyncio.run(offered_security_types(port)) == [rfb.SECURITY_VNC_AUTH]  # no "None"
    assert "refused the console password" in asyncio.run(direct_vnc_login(port, ""))
    assert "refused the console password" in asyncio.run(direct_vnc_login(port, "guess123"))


def test_each_console_gets_a_fresh_password_that_expires(running_desktop, employee):
    cookie = session_cookie(employee)
    with override_settings(VDI_CONSOLE_TICKET_TTL_SECONDS=2, VDI_CONSOLE_SPICE_CHANNEL_WINDOW_SECONDS=0):
        first = grant_console(user=employee, session_key=cookie, desktop=running_desktop, protocol="vnc",
                              origin="http://127.0.0.1")
        second = grant_console(user=employee, session_key=cookie, desktop=running_desktop, protocol="vnc",
                               origin="http://127.0.0.1")
    assert first.browser_password is None and second.browser_password is None  # VNC: never for the page
    tickets = {t.sealed_password: t for t in ConsoleTicket.objects.all()}
    passwords = [unseal_password(sealed, token) for sealed, token in zip(tickets, (first.token, second.token))]
    assert passwords[0] != passwords[1] and len(passwords[1]) == 8
    assert live_password(running_desktop.name, "vnc") == passwords[1]
    assert asyncio.run(direct_vnc_login(running_desktop.vnc_port, passwords[1])) == "logged in"
    assert "refused" in asyncio.run(direct_vnc_login(running_desktop.vnc_port, passwords[0]))  # replaced
    time.sleep(3)
    assert "refused" in asyncio.run(direct_vnc_login(running_desktop.vnc_port, passwords[1]))  # expired


def test_the_gateway_logs_in_for_the_browser_and_no_log_shows_the_password(live_stack, running_desktop, employee):
    cookie = session_cookie(employee)
    grant = grant_console(user=employee, session_key=cookie, desktop=running_desktop, protocol="vnc",
                          origin=live_stack.base_url)
    password = unseal_password(ConsoleTicket.objects.get().sealed_password, grant.token)
    seen_by_browser = []

    async def session():
        ws = await open_console(live_stack, running_desktop.pk, grant.token, cookie=cookie)
        offered = await vnc_login_as_browser(ws)
        await ws.send(b"\x01")
        stream = WebsocketBytes(ws)
        server_init = await stream.read(24)
        (name_length,) = struct.unpack(">I", server_init[20:24])
        seen_by_browser.append(server_init + await stream.read(name_length))
        await ws.close()
        return offered

    assert asyncio.run(session()) == [rfb.SECURITY_NONE]
    time.sleep(0.5)
    assert password.encode() not in b"".join(seen_by_browser)
    logs = live_stack.logs()
    assert "console opened" in logs
    assert password not in logs and grant.token not in logs
    assert password not in ConsoleTicket.objects.get().sealed_password


def test_a_replaced_password_closes_with_a_reason_the_page_retries_on(live_stack, running_desktop, employee):
    """Two tabs asking at once: the later grant replaces the earlier one's password on the
    domain; the earlier console is closed with 4503, which the page retries with a new ticket."""
    cookie = session_cookie(employee)
    first = grant_console(user=employee, session_key=cookie, desktop=running_desktop, protocol="vnc",
                          origin=live_stack.base_url)
    grant_console(user=employee, session_key=cookie, desktop=running_desktop, protocol="vnc",
                  origin=live_stack.base_url)

    async def session():
        from websockets.exceptions import ConnectionClosed

        ws = await open_console(live_stack, running_desktop.pk, first.token, cookie=cookie)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason

    code, reason = asyncio.run(session())
    assert code == 4503 and "refused the console password" in reason


def test_connect_latency_with_proxy_side_login(live_stack, running_desktop, employee, pool):
    """Ticket grant (fresh password on the domain) and websocket open to QEMU's ServerInit,
    against QEMU's own VNC login over plain TCP."""
    import statistics

    from tests.support.measurements import write_measurement

    pool.console_max_per_desktop = pool.console_max_per_user = 100  # consoles close asynchronously
    pool.save()

    cookie = session_cookie(employee)

    async def through_gateway(token):
        started = time.perf_counter()
        ws = await open_console(live_stack, running_desktop.pk, token, cookie=cookie)
        await vnc_login_as_browser(ws)
        await ws.send(b"\x01")
        await WebsocketBytes(ws).read(24)
        elapsed = time.perf_counter() - started
        await ws.close()
        return elapsed

    async def direct(password):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", running_desktop.vnc_port)
        await rfb.authenticate_to_desktop(reader, writer, password)
        writer.write(b"\x01")
        await reader.readexactly(24)
        elapsed = time.perf_counter() - started
        writer.close()
        return elapsed

    grants, gateway, plain = [], [], []
    for _ in range(10):
        started = time.perf_counter()
        grant = grant_console(user=employee, session_key=cookie, desktop=running_desktop, protocol="vnc",
                              origin=live_stack.base_url)
        grants.append(time.perf_counter() - started)
        password = unseal_password(ConsoleTicket.objects.order_by("-pk").first().sealed_password, grant.token)
        plain.append(asyncio.run(direct(password)))
        grant = grant_console(user=employee, session_key=cookie, desktop=running_desktop, protocol="vnc",
                              origin=live_stack.base_url)
        gateway.append(asyncio.run(through_gateway(grant.token)))
        ConsoleTicket.objects.all().delete()
    ms = lambda values: round(statistics.median(values) * 1000, 1)  # noqa: E731
    write_measurement("console: grant (password set on the domain + ticket), median ms", ms(grants))
    write_measurement("console: websocket open to ServerInit through the gateway (proxy-side VNC login), "
                      "median ms", ms(gateway))
    write_measurement("console: plain TCP VNC login to QEMU, no gateway, median ms", ms(plain))
    assert statistics.median(gateway) < 0.5
