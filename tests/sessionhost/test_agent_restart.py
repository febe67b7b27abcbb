"""An agent that restarted finds the sessions still running from the state directory alone."""

import json
import os
import signal
import subprocess
import sys

import pytest

from broker.sessionhost import end_session, list_sessions
from tests.sessionhost.conftest import processes_of
from tests.sessionhost.vnc_client import vnc_login
from tests.support.waiting import wait_until


def _sessions_seen_by_a_fresh_agent(state_dir):
    """list_sessions in a new Python process: nothing of this process's memory helps it."""
    script = ("import json, sys; from broker.sessionhost import list_sessions; "
              "print(json.dumps([[s.session_name, s.alive, s.display] for s in list_sessions(sys.argv[1])]))")
    result = subprocess.run([sys.executable, "-c", script, state_dir], capture_output=True, text=True, timeout=30,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                            env={"PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_session_outlives_the_agent_that_started_it(alice, state_dir):
    script = ("import sys; from broker.sessionhost import ensure_account, start_session; "
              "start_session(session_name='alice-desk', account=ensure_account(sys.argv[2]), kind='desktop', "
              "command=None, password='first-pw', state_dir=sys.argv[1])")
    result = subprocess.run([sys.executable, "-c", script, state_dir, alice.name], capture_output=True, text=True,
                            timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                            env={"PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 0, result.stderr

    [session] = list_sessions(state_dir)
    assert session.alive
    vnc_login(session.port, "first-pw")[0].close()
    end_session(session_name="alice-desk", state_dir=state_dir)
    assert processes_of(alice.uid) == []


def test_a_restarted_agent_adopts_the_running_session(alice_desktop, state_dir):
    assert _sessions_seen_by_a_fresh_agent(state_dir) == [["alice-desk", True, alice_desktop.display]]
    vnc_login(alice_desktop.port, "first-pw")[0].close()  # and it still serves consoles


def test_a_session_whose_xvnc_died_is_reported_dead_and_can_be_cleared(alice, alice_desktop, state_dir):
    # Without its supervisor (see the next test) nothing ends the session when Xvnc dies: as
    # after a host-wide kill of root's processes. The agent must see it dead.
    with open(os.path.join(state_dir, "alice-desk", "session.json")) as stream:
        os.kill(json.load(stream)["pids"]["supervisor"], signal.SIGKILL)
    os.kill(alice_desktop.xvnc_pid, signal.SIGKILL)

    wait_until(lambda: _sessions_seen_by_a_fresh_agent(state_dir) == [["alice-desk", False, alice_desktop.display]],
               timeout=10, what="the session to be reported dead")
    assert [session.alive for session in list_sessions(state_dir)] == [False]

    end_session(session_name="alice-desk", state_dir=state_dir)
    assert processes_of(alice.uid) == []
    assert not os.path.exists(f"/tmp/.X{alice_desktop.display}-lock")  # the display number is free again


def test_a_desktop_whose_xvnc_died_ends_by_itself(alice, alice_desktop, state_dir):
    os.kill(alice_desktop.xvnc_pid, signal.SIGKILL)  # icewm loses its display, its supervisor ends the rest

    wait_until(lambda: list_sessions(state_dir) == [], timeout=15, what="the session to end")
    wait_until(lambda: processes_of(alice.uid) == [], timeout=5, what="no process of alice left")
    assert not os.path.exists(f"/tmp/.X{alice_desktop.display}-lock")


@pytest.mark.parametrize("change", [{"xvnc_pid": os.getpid()},  # a live process, but not an Xvnc of alice's
                                    {"xvnc_start_ticks": 1}])  # that pid, but a process started earlier
def test_a_recycled_pid_does_not_count_as_the_session(alice_desktop, state_dir, change):
    record_path = os.path.join(state_dir, "alice-desk", "session.json")
    with open(record_path) as stream:
        record = json.load(stream)
    with open(record_path, "w") as stream:
        json.dump({**record, **change}, stream)

    assert [session.alive for session in list_sessions(state_dir)] == [False]
