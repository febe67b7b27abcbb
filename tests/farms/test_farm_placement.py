"""A farm under a logon storm and with a dead agent: the limits hold, the queue keeps its
order, and the sessions of a host that stopped answering are lost and replaced elsewhere."""

import os
import signal
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from broker import selectors
from broker.models import Desktop, DesktopEvent, DesktopState, Host
from broker.services.assignment import launch_desktop
from broker.services.desktop_sessions import end_desktop_session
from broker.services.farm_sessions import check_session_hosts, silent_after
from tests.support.waiting import wait_for_state, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.sessions]
S = DesktopState


def most_at_once_in(state: str, sessions) -> int:
    """The most sessions that were in `state` at the same moment, from their event history."""
    edges = []
    for event in DesktopEvent.objects.filter(desktop__in=sessions).order_by("created_at", "id"):
        if event.to_state == state:
            edges.append((event.created_at, 1))
        elif event.from_state == state:
            edges.append((event.created_at, -1))
    most = now = 0
    for _when, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        now += step
        most = max(most, now)
    return most


def test_thirty_launches_at_once_respect_the_host_limits_and_wait_in_order(live_stack, agent, farm, farm_users):
    farm.max_sessions_per_host, farm.max_concurrent_logons_per_host = 10, 2
    farm.save()
    users = farm_users(*[f"storm{i:02d}" for i in range(30)])
    launched, errors = {}, []

    def launch(user):
        try:
            launched[user.pk] = launch_desktop(user=user, pool=farm)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=launch, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(launched) == 30

    sessions = Desktop.objects.filter(pool=farm)
    wait_until(lambda: sessions.filter(state=S.RUNNING).count() == 10 and not sessions.filter(state=S.STARTING)
               .exists(), timeout=90, what="ten sessions running")
    assert sessions.filter(state=S.FAILED).count() == 0
    waiting = list(selectors.waiting_sessions(pool=farm))
    assert len(waiting) == 20
    assert [selectors.place_in_queue(desktop=s) for s in waiting] == list(range(1, 21))
    # Logon throttling held the whole time; the host never had more than its maximum.
    assert most_at_once_in(S.STARTING, sessions) <= 2
    assert most_at_once_in(S.RUNNING, sessions) <= 10

    # Three users log off: the first three in the queue get their sessions, in order.
    for session in sessions.filter(state=S.RUNNING)[:3]:
        end_desktop_session(desktop=session, actor=session.user, reason="logged off by the user")
    for session in waiting[:3]:
        wait_for_state(session, S.RUNNING, timeout=60)
    assert [s.pk for s in selectors.waiting_sessions(pool=farm)] == [s.pk for s in waiting[3:]]


def test_a_killed_agent_is_noticed_its_sessions_lost_and_a_restarted_one_kills_what_the_broker_forgot(
        live_stack, agent, farm, farm_users):
    first = Host.objects.get(name="sessions-1")
    Host.objects.filter(pk=first.pk).update(is_enabled=False)
    second = Host.objects.create(name="sessions-2", kind=Host.Kind.SESSION_HOST, farm=farm,
                                 console_address="127.0.0.1")
    second_agent = live_stack.start_agent(second)
    (erin,) = farm_users("erin")
    session = wait_for_state(launch_desktop(user=erin, pool=farm), S.RUNNING, timeout=60)
    assert session.host_id == second.pk
    xvnc_pid = _xvnc_listening_on(session.vnc_port)

    second_agent.send_signal(signal.SIGKILL)
    second_agent.wait(10)
    # Noticed by the periodic check once the agent has been silent for long enough.
    Host.objects.filter(pk=second.pk).update(last_checked_at=timezone.now())
    assert check_session_hosts() == []
    later = timezone.now() + silent_after() + timedelta(seconds=1)
    assert check_session_hosts(now=later) == ["sessions-2"]
    lost = Desktop.objects.get(pk=session.pk)
    assert lost.state == S.FAILED and "stopped answering" in lost.last_error
    assert not Host.objects.get(pk=second.pk).is_online

    # The next launch gives Erin a new session on a host that answers.
    Host.objects.filter(pk=first.pk).update(is_enabled=True)
    fresh = wait_for_state(launch_desktop(user=erin, pool=farm), S.RUNNING, timeout=60)
    assert fresh.pk != session.pk and fresh.host_id == first.pk

    # The old session's display still runs on the dead agent's host; its agent, back, ends it.
    assert _alive(xvnc_pid)
    live_stack.start_agent(second)
    from broker.enqueue import enqueue_after_commit

    enqueue_after_commit("broker.session_tasks.report_session_host_task", second.pk, queue=second.agent_queue)
    wait_until(lambda: not _alive(xvnc_pid), timeout=30, what="the forgotten session to be ended")
    wait_until(lambda: Host.objects.get(pk=second.pk).is_online, timeout=30, what="sessions-2 back online")


def _xvnc_listening_on(port: int) -> int:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"Xvnc") and str(port).encode() in argv:
            return int(pid)
    raise AssertionError(f"no Xvnc on port {port}")


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


def test_a_drained_session_host_takes_no_new_session_and_the_launch_waits_its_turn(live_stack, agent, farm,
                                                                                     farm_users):
    from broker.services.hosts import set_host_maintenance
    from portal.progress import desktop_progress

    host = Host.objects.get(name="sessions-1")
    (gina,) = farm_users("gina")
    running = wait_for_state(launch_desktop(user=gina, pool=farm), S.RUNNING, timeout=60)
    assert set_host_maintenance(host=host, in_maintenance=True)

    (hugo,) = farm_users("hugo")
    waiting = launch_desktop(user=hugo, pool=farm)
    from broker.services.farm_sessions import place_waiting_sessions

    place_waiting_sessions(pool_id=farm.pk)
    waiting.refresh_from_db()
    assert waiting.state == S.QUEUED and waiting.host is None
    steps = desktop_progress(waiting)["steps"]
    assert steps[0]["label"] == "Waiting for a session host (you are next)" and steps[0]["status"] == "active"
    # Sessions already there keep running.
    assert Desktop.objects.get(pk=running.pk).state == S.RUNNING

    set_host_maintenance(host=host, in_maintenance=False)
    place_waiting_sessions(pool_id=farm.pk)
    assert wait_for_state(waiting, S.RUNNING, timeout=60).host_id == host.pk


def test_an_agent_that_restarts_adopts_the_sessions_still_running(live_stack, agent, farm, farm_users):
    from tests.farms.test_farm_sessions import console_desktop_name

    Host.objects.filter(name="sessions-1").update(is_enabled=False)
    third = Host.objects.create(name="sessions-3", kind=Host.Kind.SESSION_HOST, farm=farm,
                                console_address="127.0.0.1")
    third_agent = live_stack.start_agent(third)
    (jane,) = farm_users("jane")
    session = wait_for_state(launch_desktop(user=jane, pool=farm), S.RUNNING, timeout=60)
    xvnc_pid = _xvnc_listening_on(session.vnc_port)

    third_agent.send_signal(signal.SIGKILL)
    third_agent.wait(10)
    live_stack.start_agent(third)
    from broker.enqueue import enqueue_after_commit

    before = Host.objects.get(pk=third.pk).last_checked_at
    enqueue_after_commit("broker.session_tasks.report_session_host_task", third.pk, queue=third.agent_queue)
    wait_until(lambda: Host.objects.get(pk=third.pk).last_checked_at != before, timeout=30,
               what="a report from the restarted agent")
    assert Host.objects.get(pk=third.pk).sessions_running == 1
    assert Desktop.objects.get(pk=session.pk).state == S.RUNNING and _alive(xvnc_pid)
    # The restarted agent serves the session's next console as before.
    assert console_desktop_name(live_stack, jane, session) == f"1280x800 {session.name}"
