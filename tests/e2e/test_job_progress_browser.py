"""The admin watches a long action in headless Chromium: the test worker runs the job (a
checksum of a large image file), and the Jobs page's bar moves and ends at "Succeeded" without a
reload, under the portal's Content-Security-Policy (script-src 'self')."""

import os
import time

import pytest

from broker.models import GoldenImage, GoldenImageVersion, Job
from broker.services.images import start_checksum
from tests.support.browser import browser, wait_for_page  # noqa: F401
from tests.support.measurements import write_measurement
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
SIZE = 2 * 2**30  # sparse: no disk used; some seconds of hashing on a busy machine


def test_the_jobs_page_shows_the_bar_moving_to_the_result(live_stack, browser, tmp_path, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="admin-pass-1")
    path = tmp_path / "big.qcow2"
    with open(path, "wb") as handle:
        handle.write(b"QFI\xfb")
        handle.truncate(SIZE)
    os.chmod(tmp_path, 0o755)
    image = GoldenImage.objects.create(name="big", display_name="Big")
    version = GoldenImageVersion.objects.create(image=image, number=1, path=str(path))

    page = browser.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    from tests.support.mfa import log_in_staff_in_browser

    log_in_staff_in_browser(page, live_stack.base_url, root, "admin-pass-1")

    started = time.monotonic()
    job = start_checksum(version=version, actor=root)  # committed: the test worker takes its task
    wait_until(lambda: Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, done__gt=0).exists(), timeout=60,
               what="the worker to start the job")
    page.goto(f"{live_stack.base_url}/admin/broker/job/")
    box = f'.vdi-job[data-job-id="{job.pk}"]'
    first = page.evaluate(f"document.querySelector('{box} progress').value")
    # The script moves the bar while we watch: a later value, read without a reload.
    wait_for_page(page, f"document.querySelector('{box} progress').value > {first} || "
                        f"document.querySelector('{box}').dataset.jobState === 'succeeded'", timeout=60_000)
    wait_for_page(page, f"document.querySelector('{box}').dataset.jobState === 'succeeded'", timeout=120_000)
    took = time.monotonic() - started
    assert page.inner_text(f"{box} .vdi-job-label") == "Succeeded"
    assert page.evaluate(f"document.querySelector('{box} progress').value") == 100
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED and job.done == SIZE
    assert page.inner_text(f'[data-job-message="{job.pk}"]').startswith("sha256 ")
    assert not [e for e in errors if "Content Security Policy" in e], errors
    write_measurement("jobs e2e: checksum of a 2 GiB (sparse) image, start to result in the admin (s)",
                      round(took, 1))
