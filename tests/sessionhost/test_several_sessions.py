import os

from broker.sessionhost import end_session, list_sessions, start_session
from tests.sessionhost.conftest import command_names_of, processes_of, run_as
from tests.sessionhost.vnc_client import vnc_login
from tests.support.waiting import wait_until


def _xvnc_running(pid: int, uid: int) -> bool:
    return pid in processes_of(uid)


def test_ending_one_of_two_sessions_of_an_account_leaves_the_other(alice, state_dir):
    desk = start_session(session_name="alice-desk", account=alice, kind="desktop", command=None, password="desk-pw",
                         state_dir=state_dir)
    app = start_session(session_name="alice-app", account=alice, kind="app", command=["xterm"], password="app-pw",
                        state_dir=state_dir)
    assert desk.display != app.display

    end_session(session_name="alice-desk", state_dir=state_dir)

    assert [(session.session_name, session.alive) for session in list_sessions(state_dir)] == [("alice-app", True)]
    assert not _xvnc_running(desk.xvnc_pid, alice.uid)
    vnc_login(app.port, "app-pw")[0].close()
    result = run_as(alice, ["xdpyinfo"], DISPLAY=f":{app.display}",
                    XAUTHORITY=os.path.join(state_dir, "alice-app", "private", "Xauthority"))
    assert result.returncode == 0, result.stderr


def test_logging_off_the_last_session_kills_what_escaped_the_session(alice, state_dir):
    start_session(session_name="alice-desk", account=alice, kind="desktop", command=None, password="desk-pw",
                  state_dir=state_dir)
    # A daemon the employee left behind: own process session, environment wiped, so nothing
    # ties it to the session but its owner.
    run_as(alice, ["sh", "-c", "setsid env -i sleep 600 >/dev/null 2>&1 </dev/null &"])
    wait_until(lambda: "sleep" in command_names_of(alice.uid), timeout=5, what="the stray daemon")

    end_session(session_name="alice-desk", state_dir=state_dir)

    assert processes_of(alice.uid) == []


def test_two_employees_sessions_are_independent(alice, make_account, state_dir):
    bob = make_account("bob")
    alices = start_session(session_name="alice-desk", account=alice, kind="desktop", command=None,
                           password="alice-pw", state_dir=state_dir)
    bobs = start_session(session_name="bob-desk", account=bob, kind="desktop", command=None, password="bob-pw",
                         state_dir=state_dir)

    end_session(session_name="alice-desk", state_dir=state_dir)

    assert processes_of(alice.uid) == []
    assert _xvnc_running(bobs.xvnc_pid, bob.uid)
    vnc_login(bobs.port, "bob-pw")[0].close()
    assert alices.display != bobs.display


def test_logons_at_the_same_moment_get_displays_of_their_own(make_account, state_dir):
    """Two agent threads starting sessions at once (a logon storm) once picked the same free
    display, and the second took the first one's RFB banner for its own."""
    import threading

    accounts = [make_account(f"storm{i}") for i in range(4)]
    started, errors = {}, []

    def start(i, account):
        try:
            started[i] = start_session(session_name=f"storm-{i}", account=account, kind="desktop", command=None,
                                       password=f"pw-{i}", state_dir=state_dir)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i, account)) for i, account in enumerate(accounts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({info.port for info in started.values()}) == 4
    assert all(session.alive for session in list_sessions(state_dir))
    for i, info in started.items():
        vnc_login(info.port, f"pw-{i}")[0].close()  # each port is that session's own Xvnc
