"""A drain as a job, run end to end by the test worker on two real libvirt daemons: the job's
task drains the host, the worker moves the running desktop by live migration, and the job
follows the move to its result."""

import time

import pytest

from broker.models import Desktop, DesktopState, Host, Job, LiveMigration
from broker.services.assignment import launch_desktop
from broker.services.live_migration import start_drain
from tests.support.measurements import write_measurement
from tests.support.waiting import wait_for_state, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.libvirt]
S = DesktopState


def test_a_drain_job_moves_the_running_desktop_and_reports_it(live_stack, two_hosts, pool, employee,
                                                              django_user_model):
    first, second = two_hosts
    admin = django_user_model.objects.create_superuser("root", password="admin-pass-1")
    Host.objects.filter(pk=second.pk).update(is_enabled=False)
    desktop = wait_for_state(launch_desktop(user=employee, pool=pool), S.RUNNING, timeout=120)
    assert desktop.host_id == first.pk
    Host.objects.filter(pk=second.pk).update(is_enabled=True)

    started = time.monotonic()
    job = start_drain(host=first, actor=admin)
    seen = set()

    def finished():
        row = Job.objects.get(pk=job.pk)
        seen.add((row.state, row.done, row.total))
        return row if not row.is_active else None

    try:
        job = wait_until(finished, timeout=180, what="the drain job to end", interval=0.1)
    except AssertionError:
        moves = list(LiveMigration.objects.values("state", "error"))
        raise AssertionError(f"job states seen: {seen}; moves: {moves}\n{live_stack.logs()[-3000:]}") from None
    took = time.monotonic() - started
    assert job.state == Job.State.SUCCEEDED, (job.message, job.error)
    assert (job.done, job.total) == (1, 1)
    assert ("running", 0, 1) in seen  # the bar was at 0 of 1 while the desktop moved
    assert job.result["moved"] == [desktop.name] and job.result["failed"] == []
    moved = Desktop.objects.get(pk=desktop.pk)
    assert (moved.state, moved.host_id) == (S.RUNNING, second.pk)
    assert Host.objects.get(pk=first.pk).in_maintenance
    write_measurement("drain job (one running desktop, live migration): start to result (s)", round(took, 1))
