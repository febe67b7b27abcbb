"""The dashboard in headless Chromium on the real stack (uvicorn, a Celery worker, libvirtd): its
charts are drawn from stored samples (pixels of the series' colour on each canvas, for the last
24 hours and 30 days), and a desktop started through the launch service shows up on the open
page without a reload. With VDI_SCREENSHOT_DIR set, the page is saved there as dashboard.png."""

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.support.browser import browser, wait_for_page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.libvirt, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# Pixels of the first series' colour (#1f77b4) on a chart's canvas: the line, not the axes.
SERIES_INK = """(name) => {
  const canvas = document.querySelector(`[data-chart="${name}"] canvas`);
  if (!canvas || !canvas.width) return -1;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 100 && Math.abs(data[i] - 31) < 40 && Math.abs(data[i + 1] - 119) < 40
        && Math.abs(data[i + 2] - 180) < 40) ink++;
  }
  return ink;
}"""
CHARTS = ["sessions", "launches", "launch_time", "capacity"]


def store_samples():
    """Half an hour of minute samples and two days of hour samples, with figures that move."""
    from dashboard.models import Sample
    from dashboard.services.samples import take_sample

    now = timezone.now().replace(microsecond=0)
    for k in range(30, -1, -1):
        sample = take_sample(now=now - timedelta(minutes=k))
        Sample.objects.filter(pk=sample.pk).update(
            consoles_open=k % 5 + 1, desktops_in_use=k % 7 + 2, launches=k % 3 + 1, launch_p50_s=5 + k % 4,
            launch_p95_s=20 + k % 6, vcpus_placed=k, vcpus_allowed=40, memory_placed_mib=512 * k,
            memory_allowed_mib=32768)
    Sample.objects.bulk_create(
        Sample(resolution="hour", taken_at=now.replace(minute=0, second=0) - timedelta(hours=h), period_seconds=3600,
               consoles_open=h % 9 + 1, desktops_in_use=h % 11, launches=h % 4 + 1, launch_p50_s=6, launch_p95_s=25,
               vcpus_placed=h % 20, vcpus_allowed=40, memory_placed_mib=1024, memory_allowed_mib=32768)
        for h in range(1, 48))


def cell(page, selector: str) -> str:
    return page.evaluate("(s) => (document.querySelector(s) || {textContent: '?'}).textContent", selector)


def test_the_dashboard_draws_its_charts_and_follows_a_desktop_starting(  # noqa: F811
        live_stack, browser, host, pool, employee, django_user_model):
    from broker.services.assignment import launch_desktop
    from broker.services.hosts import check_host
    from dashboard.services.samples import record_host_reading

    check_host(host_id=host.pk)  # the host's size, as the periodic check measures it
    record_host_reading(host=host)
    time.sleep(1)
    record_host_reading(host=host)
    store_samples()
    django_user_model.objects.create_superuser("boss", password="pw-boss-12")

    page = browser.new_page()
    page.goto(f"{live_stack.base_url}/admin/login/?next=/admin/dashboard/")
    page.fill("input[name=username]", "boss")
    page.fill("input[name=password]", "pw-boss-12")
    page.click("input[type=submit]")
    page.wait_for_selector("#vdi-dashboard")

    # The charts: every one has its line drawn, for the last day and for the month.
    for name in CHARTS:
        wait_for_page(page, f"({SERIES_INK})('{name}') > 50", timeout=20_000)
    assert page.evaluate("document.querySelector('[data-chart=sessions]').dataset.points") == "31"
    page.click(".vdi-range [data-span='30d']")
    wait_for_page(page, "document.querySelector('[data-chart=sessions]').dataset.points === '47'", timeout=20_000)
    for name in CHARTS:
        wait_for_page(page, f"({SERIES_INK})('{name}') > 50", timeout=20_000)
    page.click(".vdi-range [data-span='24h']")

    # The host's own use read from libvirt, and nothing running yet.
    row = f"[data-host='{host.name}']"
    assert "%" in cell(page, f"{row} [data-field=cpu]")
    assert "GiB" in cell(page, f"{row} [data-field=memory_use]")
    assert "free" in cell(page, f"{row} [data-field=storage]")
    assert cell(page, f"{row} [data-field=desktops_by_state]") == "none"
    assert cell(page, f"[data-pool='{pool.name}'] [data-field=in_use]") == "0"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "wider than 1280 px"

    # A desktop starts through the launch service; the live worker clones and boots it. The open
    # page shows it without a reload (the marker set in this page's window survives).
    page.evaluate("window.vdiTestMarker = 'same page'")
    desktop = launch_desktop(user=employee, pool=pool)
    in_use = f"[data-pool='{pool.name}'] [data-field=in_use]"
    wait_for_page(page, f"document.querySelector(\"{in_use}\").textContent === '1'", timeout=30_000)
    states = f"{row} [data-field=desktops_by_state]"
    wait_for_page(page, f"document.querySelector(\"{states}\").textContent === 'running 1'", timeout=180_000)
    desktop.refresh_from_db()
    assert desktop.state == "running"
    assert page.evaluate("window.vdiTestMarker") == "same page"
    assert page.evaluate("document.querySelector('[data-tile=desktops_in_use] .value').textContent") == "1"

    screenshots = os.environ.get("VDI_SCREENSHOT_DIR")
    if screenshots:
        Path(screenshots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(screenshots) / "dashboard.png"), full_page=True)
