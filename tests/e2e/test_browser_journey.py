"""The employee's journey in headless Debian Chromium, on the real stack: log in, launch, watch
the progress, see the VM's screen, type into its shell, close the tab, come back, reconnect."""

import os
import re
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from broker.models import Desktop, DesktopState
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, wait_for_page
from tests.support.measurements import write_measurement

pytestmark = [pytest.mark.browser, pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]

# Playwright's sync API keeps an event loop in this thread; the ORM calls below are plain
# blocking calls between browser steps, which is safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


# Share of canvas pixels that differ from black: the VGA text console of the guest.
CANVAS_INK = """() => {
  const canvas = document.querySelector('#screen canvas');
  if (!canvas || !canvas.width || !canvas.height) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 60) ink++;
  return ink / (data.length / 4);
}"""


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: scripts/install-deps.sh --test installs it")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


SHIFTED = {">": "Shift+Period", "<": "Shift+Comma", "|": "Shift+Backslash", "_": "Shift+Minus"}


def type_like_a_person(page, text: str):
    """Press Shift for shifted characters, as a person does. (Playwright's keyboard.type sends
    '>' as the Period key without Shift, and noVNC forwards physical key codes to QEMU.)"""
    for char in text:
        if char in SHIFTED:
            page.keyboard.press(SHIFTED[char])
        elif char.isupper():
            page.keyboard.press(f"Shift+Key{char}")
        else:
            page.keyboard.press("Space" if char == " " else char)
        page.wait_for_timeout(30)


def wait_for_file_text(path: str, text: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if os.path.exists(path) and text in Path(path).read_text(errors="replace"):
            return time.monotonic() - start
        time.sleep(0.1)
    tail = Path(path).read_text(errors="replace")[-500:] if os.path.exists(path) else "(no log file)"
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout} s; it ends with:\n{tail}")


def test_an_employee_launches_sees_and_uses_a_desktop_then_reconnects(live_stack, browser, employee, pool):
    page = browser.new_page()
    page.goto(f"{live_stack.base_url}/")
    assert "/login/" in page.url  # not logged in yet
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "correct-horse-9")
    page.click("button[type=submit]")
    page.wait_for_selector("text=My desktops")
    assert page.locator("article.pool h2").all_inner_texts() == ["Office desktop"]

    launched = time.monotonic()
    page.click("button.launch")
    page.wait_for_url(re.compile(r"/desktops/\d+/$"))
    desktop_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    page.wait_for_selector("#steps li.step")  # the live progress list
    assert page.locator("#steps li").count() == 4

    wait_for_page(page, "window.vdiConsole && window.vdiConsole.phase === 'connected'", timeout=120_000)
    connected = time.monotonic() - launched
    wait_for_page(page, f"({CANVAS_INK})() > 0.001", timeout=60_000)
    first_frame = time.monotonic() - launched
    desktop = Desktop.objects.get(pk=desktop_id)
    assert desktop.user == employee and desktop.state == DesktopState.RUNNING
    steps = list(desktop.events.exclude(to_state="").order_by("created_at", "id").values_list("to_state", flat=True))
    assert steps == ["cloning", "starting", "running"]

    # The guest boots to its shell; then what the user types in the page reaches that shell.
    serial_log = desktop.serial_log_path
    booted = wait_for_file_text(serial_log, "VDI-GUEST-READY", timeout=120)
    marker = f"typed-{uuid.uuid4().hex[:8]}"
    page.click("#screen canvas")
    type_like_a_person(page, f"echo {marker} > /dev/ttyS0")
    page.keyboard.press("Enter")
    wait_for_file_text(serial_log, marker, timeout=30)
    page.wait_for_timeout(500)
    ink = page.evaluate(CANVAS_INK)
    assert ink > 0.003, f"the console shows almost nothing ({ink:.4%} of pixels lit)"
    page.screenshot(path=str(Path(settings.VAR_DIR) / "e2e-console.png"))

    # Close the tab, come back, press the button again: the same desktop, connected again.
    page.close()
    page = browser.new_page()
    page.goto(f"{live_stack.base_url}/")
    button = page.locator("button.launch")
    assert button.inner_text() == "Connect"
    reconnect_started = time.monotonic()
    button.click()
    page.wait_for_url(re.compile(rf"/desktops/{desktop_id}/$"))
    wait_for_page(page, "window.vdiConsole && window.vdiConsole.phase === 'connected'", timeout=30_000)
    wait_for_page(page, f"({CANVAS_INK})() > 0.003", timeout=30_000)
    reconnected = time.monotonic() - reconnect_started
    assert Desktop.objects.filter(user=employee).count() == 1

    write_measurement("e2e: Launch click to console connected (s)", round(connected, 2))
    write_measurement("e2e: Launch click to first non-blank console frame (s)", round(first_frame, 2))
    write_measurement("e2e: console connected to guest shell ready (s, TCG boot)", round(booted, 2))
    write_measurement("e2e: reconnect click to console frame (s)", round(reconnected, 2))


def test_a_wrong_password_shows_an_error_and_no_desktops(live_stack, browser, employee):
    page = browser.new_page()
    page.goto(f"{live_stack.base_url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    assert "Please enter a correct username and password" in page.locator("[role=alert]").inner_text()
    page.goto(f"{live_stack.base_url}/")
    assert "/login/" in page.url
