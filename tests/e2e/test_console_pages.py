"""The console page in headless Chromium on real VMs: noVNC without any password in the page or
its traffic, spice-html5 through per-channel tickets, round-trip time in the toolbar,
clipboard paste, automatic reconnect, and close reasons the user can read."""

import os
import re
import uuid

import pytest

from broker.models import Pool
from broker.console import control as console_control
from tests.test_console_passwords import live_password
from tests.support.browser import CANVAS_INK, browser, type_like_a_person, wait_for_file_text, wait_for_page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def log_in(page, stack):
    page.goto(f"{stack.base_url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "correct-horse-9")
    page.click("button[type=submit]")
    page.wait_for_selector("text=My desktops")


class Recorder:
    """Everything the page received or sent: HTTP bodies and websocket frames."""

    def __init__(self, page):
        self.bodies: list[bytes] = []
        self.frames: list[bytes] = []
        page.on("response", self._response)
        page.on("websocket", self._websocket)

    def _response(self, response):
        try:
            self.bodies.append(response.body())
        except Exception:  # redirects have no body
            pass

    def _websocket(self, ws):
        for event in ("framereceived", "framesent"):
            ws.on(event, lambda payload: self.frames.append(payload if isinstance(payload, bytes)
                                                            else payload.encode()))

    def contains(self, secret: str) -> bool:
        needle = secret.encode()
        return any(needle in blob for blob in self.bodies + self.frames)


def wait_connected(page, timeout=60_000):
    wait_for_page(page, "window.vdiConsole && window.vdiConsole.phase === 'connected'", timeout=timeout)


def test_a_vnc_console_page_never_sees_the_password_and_has_the_tools_users_expect(
        live_stack, browser, running_desktop, pool):  # noqa: F811
    pool.console_idle_timeout_minutes = 20 / 60
    pool.save()
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_stack.base_url)
    page = browser.new_page()
    recorder = Recorder(page)
    log_in(page, live_stack)
    page.goto(f"{live_stack.base_url}/desktops/{running_desktop.pk}/")
    wait_connected(page)
    wait_for_page(page, f"({CANVAS_INK})() > 0.001", timeout=30_000)

    # The one-time password QEMU now requires is nowhere in what the page got or sent.
    password = live_password(running_desktop.name, "vnc")
    assert password and len(password) == 8
    assert password not in page.content()
    assert not recorder.contains(password)
    assert recorder.frames, "the recorder saw no websocket traffic"

    # Round-trip time in the toolbar.
    wait_for_page(page, "/RTT [0-9.]+ ms/.test(document.getElementById('console-rtt').textContent)",
                           timeout=10_000)

    # Paste: the clipboard's text is typed into the guest's shell.
    serial_log = running_desktop.serial_log_path
    wait_for_file_text(serial_log, "VDI-GUEST-READY", timeout=120)
    marker = f"pasted-{uuid.uuid4().hex[:8]}"
    page.evaluate("(text) => navigator.clipboard.writeText(text)", f"echo {marker} > /dev/ttyS0\n")
    page.click("#btn-paste")
    wait_for_file_text(serial_log, marker, timeout=30)

    # A dropped connection comes back on its own, and says so while it does.
    console_control.close_consoles(group=console_control.desktop_group(running_desktop.pk), code=1012,
                                   reason="The console gateway restarted.")
    wait_for_page(page, "document.getElementById('console-status').textContent.includes('Reconnecting')",
                           timeout=10_000)
    wait_connected(page, timeout=30_000)
    assert page.evaluate("window.vdiConsole.reconnects") == 1
    assert not recorder.contains(live_password(running_desktop.name, "vnc"))

    # A close by the gateway (here: idle) is shown with its reason, and not retried.
    wait_for_page(page, "window.vdiConsole.phase === 'disconnected'", timeout=40_000)
    status = page.locator("#console-status").inner_text()
    assert "without input" in status and "4431" in status
    assert page.locator("#btn-reconnect").is_visible()


def test_a_spice_console_in_chromium_on_a_real_vm(live_stack, browser, running_desktop, pool):  # noqa: F811
    pool.console_protocol_switch = True  # the pool says VNC; the user switches to SPICE
    pool.save()
    page = browser.new_page()
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    log_in(page, live_stack)
    page.goto(f"{live_stack.base_url}/desktops/{running_desktop.pk}/")
    wait_connected(page)
    assert page.evaluate("window.vdiConsole.protocol") == "vnc"

    page.click("#btn-protocol")
    wait_for_page(page, "window.vdiConsole.protocol === 'spice' && window.vdiConsole.phase === 'connected'",
                           timeout=60_000)
    wait_for_page(page, f"({CANVAS_INK})() > 0.001", timeout=60_000)
    assert page.locator("#btn-protocol").inner_text() == "Switch to VNC"
    spice_url = [url for url in sockets][-1]
    assert len([url for url in sockets if url == spice_url]) >= 4  # main, display, inputs, cursor

    serial_log = running_desktop.serial_log_path
    wait_for_file_text(serial_log, "VDI-GUEST-READY", timeout=120)
    marker = f"spice-{uuid.uuid4().hex[:8]}"
    page.click("#screen canvas")
    type_like_a_person(page, f"echo {marker} > /dev/ttyS0")
    page.keyboard.press("Enter")
    wait_for_file_text(serial_log, marker, timeout=30)
    wait_for_page(page, "/RTT [0-9.]+ ms/.test(document.getElementById('console-rtt').textContent)",
                           timeout=10_000)
    assert re.match(r"Connected \(SPICE\)", page.locator("#console-status").inner_text())
    assert Pool.objects.get(pk=pool.pk).protocol == "vnc"
