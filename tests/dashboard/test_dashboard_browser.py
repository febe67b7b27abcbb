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
from tests.support.mfa import log_in_staff_in_browser

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


def store_samples(workers: list[str]) -> None:
    """A day of samples every 5 minutes and 30 days of hour samples, shaped like a working day
    (stored as the sampling task stores them), and the newest taken for real now."""
    import math

    from dashboard.models import Sample
    from dashboard.services.samples import take_sample

    now = timezone.now().replace(microsecond=0)

    def busy(at) -> float:  # 0 at night, 1 at 11:00
        return max(0.0, math.sin(math.pi * (at.hour + at.minute / 60 - 6) / 12))

    def sample(resolution, at, period):
        b = busy(at)
        return Sample(resolution=resolution, taken_at=at, period_seconds=period, consoles_open=round(40 * b),
                      desktops_in_use=round(55 * b) + 3, desktops_running=round(60 * b) + 8, spares_ready=5,
                      launches=round(12 * b * period / 300), launch_p50_s=6 + 3 * b, launch_p95_s=18 + 20 * b,
                      launches_timed=round(12 * b), vcpus_placed=20 + 100 * b, vcpus_allowed=160,
                      memory_placed_mib=40960 + 200000 * b, memory_allowed_mib=393216)

    Sample.objects.bulk_create([sample("minute", now - timedelta(minutes=5 * k), 300) for k in range(1, 288)]
                               + [sample("hour", now.replace(minute=0, second=0) - timedelta(hours=h), 3600)
                                  for h in range(1, 720)])
    take_sample(now=now, workers=workers)


def cell(page, selector: str) -> str:
    return page.evaluate("(s) => (document.querySelector(s) || {textContent: '?'}).textContent", selector)


def test_the_dashboard_draws_its_charts_and_follows_a_desktop_starting(  # noqa: F811
        live_stack, browser, host, pool, employee, django_user_model):
    from broker.services.assignment import launch_desktop
    from broker.services.hosts import check_host
    from dashboard.services.samples import record_host_reading

    from config.celery import app

    check_host(host_id=host.pk)  # the host's size, as the periodic check measures it
    record_host_reading(host=host)
    time.sleep(1)
    record_host_reading(host=host)
    workers = list(app.control.inspect(timeout=3).ping() or {})  # the live stack's worker answers
    assert workers
    store_samples(workers)
    boss = django_user_model.objects.create_superuser("boss", password="pw-boss-12")

    page = browser.new_page()
    log_in_staff_in_browser(page, live_stack.base_url, boss, "pw-boss-12", next_path="/admin/dashboard/")
    page.wait_for_selector("#vdi-dashboard")

    # The charts: every one has its line drawn, for the last day and for the month.
    for name in CHARTS:
        wait_for_page(page, f"({SERIES_INK})('{name}') > 50", timeout=20_000)
    assert page.evaluate("document.querySelector('[data-chart=sessions]').dataset.points") == "288"
    page.click(".vdi-range [data-span='30d']")
    wait_for_page(page, "document.querySelector('[data-chart=sessions]').dataset.points === '719'", timeout=20_000)
    for name in CHARTS:
        wait_for_page(page, f"({SERIES_INK})('{name}') > 50", timeout=20_000)
    page.click(".vdi-range [data-span='24h']")

    # The host's own use read from libvirt, and nothing running yet.
    row = f"[data-host='{host.name}']"
    assert "%" in cell(page, f"{row} [data-field=cpu]")
    assert "GiB" in cell(page, f"{row} [data-field=memory_use]")
    assert "free" in cell(page, f"{row} [data-field=storage]")
    assert cell(page, f"{row} [data-field=desktops_by_state]") == "none"
    assert int(cell(page, "[data-tile=workers_alive] .value")) >= 1
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
