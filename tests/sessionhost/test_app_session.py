"""A published application: one program on its own display, the session ends with it."""

import os
import re
import socket

import pytest

from broker.sessionhost import SessionHostError, list_sessions, start_session
from tests.sessionhost.conftest import command_names_of, processes_of, run_as
from tests.sessionhost.vnc_client import vnc_login
from tests.support.waiting import wait_until


def _port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_the_application_fills_the_screen_without_decorations(alice, state_dir):
    session = start_session(session_name="alice-app", account=alice, kind="app", command=["xterm"],
                            password="app-pw", state_dir=state_dir)
    vnc_login(session.port, "app-pw")[0].close()
    env = {"DISPLAY": f":{session.display}", "XAUTHORITY": os.path.join(state_dir, "alice-app", "private",
                                                                        "Xauthority")}

    def xterm_geometry():
        tree = run_as(alice, ["xwininfo", "-root", "-tree"], **env).stdout
        window = re.search(r"(0x[0-9a-f]+) \"[^\"]*\": \(\"xterm\" \"XTerm\"\)\s+(\d+)x(\d+)\+", tree)
        if window is None:
            return None
        size = (int(window.group(2)), int(window.group(3)))
        return size if size[0] > 1200 else None  # openbox maximizes it right after it maps

    width, height = wait_until(xterm_geometry, timeout=15, what="a maximized xterm")
    # Maximized and undecorated: the whole 1280x800 screen, bar xterm's character-cell rounding.
    assert 1260 <= width <= 1280 and 780 <= height <= 800
    assert "openbox" in command_names_of(alice.uid)
    assert "icewm" not in command_names_of(alice.uid)


def test_the_session_ends_by_itself_when_the_application_exits(alice, state_dir):
    session = start_session(session_name="alice-app", account=alice, kind="app",
                            command=["xterm", "-e", "sleep", "2"], password="app-pw", state_dir=state_dir)
    wait_until(lambda: "xterm" in command_names_of(alice.uid), timeout=10, what="the application")

    wait_until(lambda: list_sessions(state_dir) == [], timeout=20, what="the session to end after its application")

    assert _port_closed(session.port)
    wait_until(lambda: processes_of(alice.uid) == [], timeout=5, what="no process of alice left")
    assert not os.path.exists(os.path.join(state_dir, "alice-app"))


def test_an_application_that_is_not_installed_is_refused_before_anything_starts(alice, state_dir):
    with pytest.raises(SessionHostError, match="not installed"):
        start_session(session_name="alice-app", account=alice, kind="app", command=["no-such-app-vdi"],
                      password="app-pw", state_dir=state_dir)
    assert list_sessions(state_dir) == []
