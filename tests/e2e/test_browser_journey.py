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
from tests.support.browser import CANVAS_INK, browser, type_like_a_person, wait_for_file_text, wait_for_page  # noqa: F401
from tests.support.measurements import write_measurement
from tests.support.screenshots import save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]

# Playwright's sync API keeps an event loop in this thread; the ORM calls below are plain
# blocking calls between browser steps, which is safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_an_employee_launches_sees_and_uses_a_desktop_then_reconnects(live_stack, browser, employee, pool):
    page = browser.new_page()
    page.goto(f"{live_stack.base_url}/")
    assert "/login/" in page.url  # not logged in yet
    save_screenshot(page, "portal-login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "correct-horse-9")
    page.click("button[type=submit]")
    page.wait_for_selector("text=My desktops")
    assert page.locator("article.pool h2").all_inner_texts() == ["Office desktop"]
    save_screenshot(page, "my-desktops")

    launched = time.monotonic()
    page.click("button.launch")
    page.wait_for_url(re.compile(r"/desktops/\d+/$"))
    desktop_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    page.wait_for_selector("#steps li.step")  # the live progress list
    assert page.locator("#steps li").count() == 4
    save_screenshot(page, "launch-progress")

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
    save_screenshot(page, "console")

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
