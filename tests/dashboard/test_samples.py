"""Samples: launches and their times read back from the rows, the hour roll-up, pruning, and
the periodic task that writes them."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from broker.models import Desktop, DesktopEvent
from dashboard.models import HostReading, Sample, TaskFailure
from dashboard.services.samples import prune, roll_up_hours, take_sample


def _launch(site, user, *, at, ready_after_s, pool="office"):
    """A desktop handed to `user` at `at` that became ready `ready_after_s` later (None: not yet)."""
    desktop = Desktop.objects.create(pool=site[pool], host=site["big"], user=user, image_version=site["version"],
                                     name=f"launch-{user.username}", assigned_at=at,
                                     state="running" if ready_after_s is not None else "cloning")
    if ready_after_s is not None:
        event = DesktopEvent.objects.create(desktop=desktop, from_state="starting", to_state="running")
        DesktopEvent.objects.filter(pk=event.pk).update(created_at=at + timedelta(seconds=ready_after_s))
    return desktop


def test_a_sample_counts_the_launches_since_the_last_one_and_their_times(site, django_user_model):
    now = timezone.now().replace(microsecond=0)
    first = take_sample(now=now - timedelta(seconds=60))
    users = [django_user_model.objects.create_user(f"launcher{i}") for i in range(5)]
    for user, seconds in zip(users, [4.0, 6.0, 8.0, 30.0]):
        _launch(site, user, at=now - timedelta(seconds=30), ready_after_s=seconds)
    _launch(site, users[4], at=now - timedelta(seconds=5), ready_after_s=None)  # still cloning

    sample = take_sample(now=now)
    assert sample.period_seconds == 60 and first.taken_at == now - timedelta(seconds=60)
    assert sample.launches == 5 and sample.launches_timed == 4
    assert sample.launch_p50_s == 6.0 or sample.launch_p50_s == 8.0
    assert sample.launch_p95_s == 30.0
    # The gauges of the known site, as the live figures count them.
    assert (sample.consoles_open, sample.desktops_running, sample.spares_ready) == (2, 7, 2)
    assert sample.vcpus_placed == 10 + 5 * 2


def test_a_user_powering_on_a_stopped_desktop_is_a_launch(site):
    now = timezone.now().replace(microsecond=0)
    user = site["users"][5]
    desktop = Desktop.objects.create(pool=site["lab"], host=site["big"], user=user, image_version=site["version"],
                                     name="lab-stopped", state="stopped")
    assert desktop.transition("starting", expected="stopped", message="launched; powering on", actor=user)
    assert desktop.transition("running", expected="starting", message="up")
    sample = take_sample(now=timezone.now() + timedelta(seconds=1))
    assert sample.launches == 1 and sample.launches_timed == 1
    assert 0 <= sample.launch_p50_s < 5
    # The system starting a desktop (no user as actor) is not a launch.
    assert desktop.transition("stopped", expected="running")
    assert desktop.transition("starting", expected="stopped", message="spare powered on by the schedule")
    assert take_sample(now=timezone.now() + timedelta(seconds=2)).launches == 0
    del now


def test_a_ready_spare_handed_over_was_ready_at_once(site, django_user_model):
    spare = site["office"].desktops.filter(state="running", user__isnull=True).get()
    Desktop.objects.filter(pk=spare.pk).update(user=django_user_model.objects.create_user("quick"),
                                                assigned_at=timezone.now())
    sample = take_sample(now=timezone.now() + timedelta(seconds=1))
    assert (sample.launches, sample.launches_timed, sample.launch_p50_s) == (1, 1, 0.0)


def test_full_hours_roll_up_into_one_sample_each_and_old_samples_go(site):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    for minute in range(0, 60, 10):  # six samples in the first hour, 1..6 consoles
        take_sample(now=hour + timedelta(minutes=minute + 5))
        Sample.objects.filter(taken_at=hour + timedelta(minutes=minute + 5)).update(consoles_open=minute / 10 + 1,
                                                                                   launches=2)
    take_sample(now=hour + timedelta(hours=2, minutes=30))  # a lone sample two hours later
    assert roll_up_hours() == 2  # the hour without samples stays a gap
    rolled = Sample.objects.filter(resolution="hour").order_by("taken_at")
    assert [s.taken_at for s in rolled] == [hour + timedelta(hours=1), hour + timedelta(hours=3)]
    assert rolled[0].consoles_open == pytest.approx(3.5) and rolled[0].launches == 12
    assert roll_up_hours() == 0  # idempotent

    Sample.objects.filter(resolution="minute").update(taken_at=F("taken_at") - timedelta(days=3))
    Sample.objects.filter(resolution="hour", taken_at=hour + timedelta(hours=1)).update(
        taken_at=timezone.now() - timedelta(days=40))
    HostReading.objects.create(host=site["big"], taken_at=timezone.now() - timedelta(hours=2))
    TaskFailure.objects.create(task_name="x")
    TaskFailure.objects.filter(task_name="x").update(failed_at=timezone.now() - timedelta(days=8))
    deleted = prune()
    assert deleted == {"minute samples": 7, "hour samples": 1, "host readings": 1, "task failures": 1}
    assert Sample.objects.filter(resolution="hour").count() == 1


def test_thirty_days_of_charts_stay_small(site):
    """A month of samples every minute, rolled up: what the 30-day chart reads is 720 rows."""
    from dashboard.selectors import chart_series

    now = timezone.now()
    Sample.objects.bulk_create(Sample(resolution="hour", taken_at=now - timedelta(hours=h), period_seconds=3600)
                               for h in range(1, 24 * 35))
    series = chart_series(span="30d", now=now)
    assert len(series["series"]["t"]) == 24 * 30 - 1
    prune(now=now)
    assert Sample.objects.filter(resolution="hour").count() <= 24 * 35


def test_the_periodic_task_samples_and_reads_each_hypervisor(site, django_capture_on_commit_callbacks):
    from dashboard import tasks
    from dashboard.selectors import host_figures

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tasks.take_dashboard_sample_task.run()
    sample = Sample.objects.get(resolution="minute")
    assert sample.workers_alive is not None  # asked (none of this test's workers run: maybe 0)
    assert sample.desktops_running == 3
    assert len(callbacks) == 2  # a reading of each enabled hypervisor, sent after commit

    for host in (site["big"], site["small"]):
        tasks.read_host_usage_task.run(host.pk)
        tasks.read_host_usage_task.run(host.pk)
    tasks.read_host_usage_task.run(999999)  # a host removed meanwhile: nothing, no error
    usage = {h["name"]: h["usage"] for h in host_figures()}
    assert usage["big"]["error"] == "" and usage["big"]["storage_capacity_bytes"] > 0
    assert usage["big"]["memory_total_mib"] > 0 and usage["big"]["running_domains"] >= 1


def test_a_failing_task_is_recorded(db):
    from celery import shared_task

    @shared_task(name="tests.dashboard.always_fails")
    def always_fails():
        raise ValueError("the disk is on fire")

    always_fails.apply()
    failure = TaskFailure.objects.get()
    assert failure.task_name == "tests.dashboard.always_fails"
    assert failure.error == "ValueError: the disk is on fire"
