"""A console in headless Chromium follows its desktop across a live migration: the employee
types, the admin drains the host, the page reconnects by itself to the new host (no login, no
click) and what the employee types next reaches the same shell."""

import os
import re
import time
import uuid

import pytest

from broker.models import Desktop, DesktopState, Host, LiveMigration
from broker.services.live_migration import drain_host
from tests.support.browser import browser, type_like_a_person, wait_for_file_text, wait_for_page  # noqa: F401
from tests.support.measurements import write_measurement
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_an_open_console_follows_its_desktop_to_the_new_host(live_stack, browser, two_hosts, employee, pool):
    first, second = two_hosts
    Host.objects.filter(pk=second.pk).update(is_enabled=False)  # it starts on the first host
    page = browser.new_page()
    page.goto(f"{live_stack.base_url}/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "correct-horse-9")
    page.click("button[type=submit]")
    page.click("button.launch")
    page.wait_for_url(re.compile(r"/desktops/\d+/$"))
    desktop = Desktop.objects.get(pk=int(page.url.rstrip("/").rsplit("/", 1)[1]))
    wait_for_page(page, "window.vdiConsole && window.vdiConsole.phase === 'connected'", timeout=120_000)
    desktop.refresh_from_db()
    assert desktop.host_id == first.pk
    wait_for_file_text(desktop.serial_log_path, "VDI-GUEST-READY", timeout=120)

    before = f"before-{uuid.uuid4().hex[:6]}"
    page.click("#screen canvas")
    type_like_a_person(page, f"echo {before} > /dev/ttyS0")
    page.keyboard.press("Enter")
    wait_for_file_text(desktop.serial_log_path, before, timeout=30)

    Host.objects.filter(pk=second.pk).update(is_enabled=True)
    drained_at = time.monotonic()
    assert drain_host(host=Host.objects.get(pk=first.pk))["moving"] == [desktop.name]
    migration = wait_until(lambda: LiveMigration.objects.filter(desktop=desktop, state__in=(
        LiveMigration.State.COMPLETED, LiveMigration.State.FAILED)).first(), timeout=120, what="the move")
    assert migration.state == LiveMigration.State.COMPLETED, migration.error
    moved = Desktop.objects.get(pk=desktop.pk)
    assert moved.host_id == second.pk and moved.state == DesktopState.RUNNING

    # The page noticed, reconnected by itself with a fresh ticket, and shows the new host's screen.
    try:
        wait_for_page(page, "window.vdiConsole.reconnects >= 1 && window.vdiConsole.phase === 'connected'",
                      timeout=60_000)
    except TimeoutError:
        raise AssertionError(f"the console did not come back: {page.evaluate('JSON.stringify(window.vdiConsole)')}; "
                             f"status: {page.inner_text('#console-status')}") from None
    back = time.monotonic() - drained_at
    assert page.locator("input[name=password]").count() == 0  # no login on the way
    after = f"after-{uuid.uuid4().hex[:6]}"
    page.click("#screen canvas")
    type_like_a_person(page, f"echo {after} > /dev/ttyS0")
    page.keyboard.press("Enter")
    wait_for_file_text(desktop.serial_log_path, after, timeout=30)

    write_measurement("live migration e2e: drain to console connected again on the new host (s)", round(back, 2))
    write_measurement("live migration e2e: the move itself, as libvirt ran it (s)", round(migration.duration_s, 2))
