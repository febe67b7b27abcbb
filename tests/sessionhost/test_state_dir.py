"""The session host's state directories are reachable by the accounts whatever the agent's
umask (`make run` runs with 077): every directory above a session's private files must let
the account through, or Xvnc and xauth cannot open them."""

import os
import stat

from broker.sessionhost.records import prepare_state_dir


def test_the_state_dirs_can_be_traversed_under_a_strict_umask(tmp_path):
    base = tmp_path / "sessions"
    previous = os.umask(0o077)
    try:
        prepare_state_dir(str(base / "local-sessions"))
    finally:
        os.umask(previous)
    for directory in (base, base / "local-sessions"):
        mode = stat.S_IMODE(os.stat(directory).st_mode)
        assert mode & 0o011 == 0o011, f"{directory} is {oct(mode)}"
    assert stat.S_IMODE(os.stat(base / "local-sessions").st_mode) == 0o711  # not listable
