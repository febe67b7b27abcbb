import os

import pytest

from broker.sessionhost import SessionHostError, list_sessions, start_session
from tests.sessionhost.conftest import processes_of


def test_an_xvnc_that_cannot_start_is_reported_with_its_log_and_nothing_is_left(alice, state_dir):
    # 192.0.2.1 (TEST-NET-1) is on no interface of this host: Xvnc cannot bind to it.
    with pytest.raises(SessionHostError) as failure:
        start_session(session_name="alice-desk", account=alice, kind="desktop", command=None, password="first-pw",
                      listen_address="192.0.2.1", state_dir=state_dir)

    assert "Xvnc" in str(failure.value) and "Cannot assign requested address" in str(failure.value)
    assert processes_of(alice.uid) == []
    assert list_sessions(state_dir) == []
    assert os.listdir(state_dir) == [f".lock-{alice.name}"]


@pytest.mark.parametrize("arguments", [
    {"session_name": "../escape"}, {"session_name": ".hidden"}, {"kind": "kiosk"}, {"geometry": "big"},
    {"listen_address": "localhost; rm -rf /"}, {"depth": 7}, {"password": "pässword"}, {"password": ""},
])
def test_it_rejects_bad_arguments(alice, state_dir, arguments):
    with pytest.raises(ValueError):
        start_session(**{"session_name": "alice-desk", "account": alice, "kind": "desktop", "command": None,
                         "password": "first-pw", "state_dir": state_dir, **arguments})
    assert list_sessions(state_dir) == []
