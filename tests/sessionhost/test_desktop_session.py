import json
import os
import stat
import time

import pytest

from broker.sessionhost import (
    end_session,
    list_sessions,
    session_pss_mib,
    set_session_password,
    start_session,
)
from tests.sessionhost.conftest import command_names_of, proc_file, processes_of
from tests.sessionhost.vnc_client import (
    LoginRefused,
    request_full_update,
    rfb_banner,
    vnc_login,
)
from tests.support.measurements import write_measurement
from tests.support.waiting import wait_until


def test_a_desktop_session_answers_vnc_with_its_password(alice, state_dir):
    started = time.monotonic()
    session = start_session(session_name="alice-desk", account=alice, kind="desktop", command=None,
                            password="first-pw", state_dir=state_dir)
    write_measurement("sessionhost: start_session, call to return (s)", round(time.monotonic() - started, 3))

    assert session.alive and session.port == 5900 + session.display and session.display >= 200
    assert rfb_banner(session.port) == b"RFB 003.008\n"
    connection, server = vnc_login(session.port, "first-pw")
    connection.close()
    assert server == {"width": 1280, "height": 800, "name": "alice-desk"}
    with pytest.raises(LoginRefused):
        vnc_login(session.port, "wrong-pw")


def test_a_new_password_takes_over_and_open_consoles_stay(alice_desktop, state_dir):
    open_console, server = vnc_login(alice_desktop.port, "first-pw")

    set_session_password(session_name="alice-desk", password="second-pw", state_dir=state_dir)

    with pytest.raises(LoginRefused):
        vnc_login(alice_desktop.port, "first-pw")
    vnc_login(alice_desktop.port, "second-pw")[0].close()
    assert request_full_update(open_console, width=server["width"], height=server["height"]) == 0
    open_console.close()


def test_failed_logins_do_not_lock_out_the_rightful_console(alice_desktop):
    # Any employee on the host can reach 127.0.0.1: TigerVNC's blacklist would let them lock
    # the gateway (same address) out of alice's session with five wrong passwords.
    for _ in range(8):
        with pytest.raises(LoginRefused):
            vnc_login(alice_desktop.port, "guessing")
    vnc_login(alice_desktop.port, "first-pw")[0].close()


def test_a_second_console_shares_the_display_without_kicking_the_first(alice_desktop):
    first, server = vnc_login(alice_desktop.port, "first-pw", shared=False)

    second, _ = vnc_login(alice_desktop.port, "first-pw", shared=False)  # a reconnect asking for exclusivity

    assert request_full_update(first, width=server["width"], height=server["height"]) == 0
    assert request_full_update(second, width=server["width"], height=server["height"]) == 0
    first.close()
    second.close()


def test_the_desktop_runs_icewm_and_xterm_as_the_account(alice, alice_desktop):
    wait_until(lambda: {"icewm", "xterm"} <= command_names_of(alice.uid), timeout=15, what="icewm and xterm")
    xvnc_status = proc_file(alice_desktop.xvnc_pid, "status").decode()
    assert f"Uid:\t{alice.uid}\t{alice.uid}\t{alice.uid}" in xvnc_status
    for pid in processes_of(alice.uid):
        environ = proc_file(pid, "environ").split(b"\0")
        if environ == [b""]:
            continue  # exited meanwhile
        assert not any(entry.startswith((b"PYTEST", b"DJANGO", b"VIRTUAL_ENV", b"SUDO")) for entry in environ)
        assert f"HOME={alice.home}".encode() in environ and f"USER={alice.name}".encode() in environ


def test_starting_a_running_session_again_returns_it_with_the_new_password(alice, alice_desktop, state_dir):
    again = start_session(session_name="alice-desk", account=alice, kind="desktop", command=None,
                          password="again-pw", state_dir=state_dir)

    assert (again.display, again.xvnc_pid, again.started_at) == (alice_desktop.display, alice_desktop.xvnc_pid,
                                                                 alice_desktop.started_at)
    vnc_login(again.port, "again-pw")[0].close()


def test_the_state_directory_says_what_runs_and_keeps_secrets_private(alice, alice_desktop, state_dir):
    session_dir = os.path.join(state_dir, "alice-desk")
    with open(os.path.join(session_dir, "session.json")) as stream:
        record = json.load(stream)
    assert record["display"] == alice_desktop.display and record["account"] == alice.name
    assert record["pids"]["xvnc"] == alice_desktop.xvnc_pid
    info = os.stat(os.path.join(session_dir, "session.json"))
    assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o644
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o711
    private = os.path.join(session_dir, "private")
    info = os.stat(private)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (alice.uid, 0o700)
    for name in ("vncpasswd", "Xauthority", "xvnc.log"):
        info = os.stat(os.path.join(private, name))
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (alice.uid, 0o600), name


def test_ending_the_session_leaves_no_process_of_the_account(alice, alice_desktop, state_dir):
    wait_until(lambda: {"icewm", "xterm"} <= command_names_of(alice.uid), timeout=15, what="the desktop")

    end_session(session_name="alice-desk", state_dir=state_dir)

    assert processes_of(alice.uid) == []
    assert list_sessions(state_dir) == []
    assert not os.path.exists(os.path.join(state_dir, "alice-desk"))
    assert os.path.isdir(alice.home)
    assert not os.path.exists(f"/tmp/.X{alice_desktop.display}-lock")
    end_session(session_name="alice-desk", state_dir=state_dir)  # ending it again is fine


def test_an_idle_desktop_costs_what_the_field_notes_say(alice, alice_desktop, state_dir):
    wait_until(lambda: {"icewm", "xterm"} <= command_names_of(alice.uid), timeout=15, what="the desktop")
    time.sleep(2)  # let the desktop settle (icewm loads its theme after mapping)

    pss = session_pss_mib("alice-desk", state_dir=state_dir)

    write_measurement("sessionhost: PSS of one idle desktop session (MiB)", round(pss, 1))
    assert 20 < pss < 400


def test_a_tickets_password_expires_unless_a_newer_one_replaced_it(alice_desktop, state_dir):
    from broker.sessionhost import expire_session_password, set_session_password
    from broker.sessionhost.vncpasswd import password_file_digest

    set_session_password(session_name="alice-desk", password="ticket-1", state_dir=state_dir)
    set_session_password(session_name="alice-desk", password="ticket-2", state_dir=state_dir)
    # The first ticket's expiry comes after the second ticket: the second's password stays.
    assert not expire_session_password(session_name="alice-desk", digest=password_file_digest("ticket-1"),
                                       state_dir=state_dir)
    vnc_login(alice_desktop.port, "ticket-2")[0].close()
    assert expire_session_password(session_name="alice-desk", digest=password_file_digest("ticket-2"),
                                   state_dir=state_dir)
    with pytest.raises(LoginRefused):
        vnc_login(alice_desktop.port, "ticket-2")
