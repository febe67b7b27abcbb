"""A second employee on the same session host must not reach the first one's session."""

import os
import stat

import pytest

from tests.sessionhost.conftest import run_as


@pytest.fixture
def bob(make_account):
    return make_account("bob")


def _private(state_dir):
    return os.path.join(state_dir, "alice-desk", "private")


def test_the_owner_can_use_the_display(alice, alice_desktop, state_dir):
    result = run_as(alice, ["xdpyinfo"], DISPLAY=f":{alice_desktop.display}",
                    XAUTHORITY=os.path.join(_private(state_dir), "Xauthority"))
    assert result.returncode == 0, result.stderr
    assert "dimensions:    1280x800 pixels" in result.stdout


def test_another_account_cannot_connect_to_the_display(bob, alice_desktop):
    result = run_as(bob, ["xdpyinfo"], DISPLAY=f":{alice_desktop.display}")

    assert result.returncode != 0
    assert "unable to open display" in result.stderr


def test_another_account_cannot_borrow_the_cookie(bob, alice_desktop, state_dir):
    xauthority = os.path.join(_private(state_dir), "Xauthority")
    assert run_as(bob, ["cat", xauthority]).returncode != 0

    result = run_as(bob, ["xdpyinfo"], DISPLAY=f":{alice_desktop.display}", XAUTHORITY=xauthority)

    assert result.returncode != 0


def test_another_account_cannot_reach_the_display_over_tcp(bob, alice_desktop):
    result = run_as(bob, ["xdpyinfo"], DISPLAY=f"127.0.0.1:{alice_desktop.display}")
    assert result.returncode != 0


def test_another_account_cannot_read_the_password_home_or_logs(alice, bob, alice_desktop, state_dir):
    with open(os.path.join(alice.home, "diary.txt"), "w") as stream:
        stream.write("private")
    os.chown(os.path.join(alice.home, "diary.txt"), alice.uid, alice.gid)

    for path in ("vncpasswd", "xvnc.log", "session.log"):
        assert run_as(bob, ["cat", os.path.join(_private(state_dir), path)]).returncode != 0, path
    assert run_as(bob, ["ls", _private(state_dir)]).returncode != 0
    assert run_as(bob, ["ls", alice.home]).returncode != 0
    assert run_as(bob, ["cat", os.path.join(alice.home, "diary.txt")]).returncode != 0
    assert run_as(bob, ["ls", state_dir]).returncode != 0  # the list of sessions on the host
    assert run_as(alice, ["cat", os.path.join(alice.home, "diary.txt")]).stdout == "private"


def test_the_vnc_port_listens_on_loopback_only(alice_desktop):
    with open("/proc/net/tcp") as stream:
        listeners = [line.split()[1] for line in stream if line.split()[3] == "0A"]
    ours = [address for address in listeners if int(address.split(":")[1], 16) == alice_desktop.port]
    assert ours == [f"0100007F:{alice_desktop.port:04X}"]


def test_no_session_file_is_writable_by_others(alice_desktop, state_dir):
    for directory, subdirectories, files in os.walk(state_dir):
        for name in [*subdirectories, *files]:
            mode = os.lstat(os.path.join(directory, name)).st_mode
            assert not mode & (stat.S_IWOTH | stat.S_IWGRP), os.path.join(directory, name)
            if name not in ("session.json", "alice-desk"):
                assert not mode & stat.S_IROTH, os.path.join(directory, name)


def test_the_x_socket_directory_is_taken_back_from_an_employee(make_account, state_dir):
    # Had an employee's X server created /tmp/.X11-unix, that employee could delete everyone
    # else's display sockets in it.
    from broker.sessionhost import start_session

    carol = make_account("carol")
    os.chown("/tmp/.X11-unix", carol.uid, carol.gid)
    try:
        start_session(session_name="carol-desk", account=carol, kind="desktop", command=None, password="carol-pw",
                      state_dir=state_dir)
        info = os.stat("/tmp/.X11-unix")
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o1777)
    finally:
        os.chown("/tmp/.X11-unix", 0, 0)
