import os
import pwd
import re
import stat

import pytest

from broker.sessionhost import (
    SessionHostError,
    account_name,
    ensure_account,
    remove_account,
)
from tests.sessionhost.conftest import processes_of, run_as


def test_account_names_are_valid_debian_names_and_deterministic():
    name = account_name(prefix="vdi", user_id=42, username="Anne-Marie.O'Neil@Example.COM")
    assert name == account_name(prefix="vdi", user_id=42, username="Anne-Marie.O'Neil@Example.COM")
    assert re.match(r"^[a-z_][a-z0-9_-]*$", name) and len(name) <= 32
    assert name.startswith("vdi42-anne-marie-o-neil")


def test_two_users_whose_names_slug_alike_get_two_accounts():
    assert account_name(prefix="vdi", user_id=1, username="ann.lee") != account_name(prefix="vdi", user_id=2,
                                                                                     username="ann_lee")


def test_a_long_username_is_cut_but_keeps_the_user_id():
    name = account_name(prefix="vdi", user_id=123456, username="x" * 100)
    assert len(name) == 32 and name.startswith("vdi123456-")


def test_it_rejects_a_prefix_that_is_not_a_valid_name_start():
    with pytest.raises(ValueError):
        account_name(prefix="1x", user_id=1, username="bob")


def test_the_account_is_created_once_with_a_private_home(make_account):
    account = make_account("carol")
    info = os.stat(account.home)
    assert (info.st_uid, info.st_gid) == (account.uid, account.gid)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert pwd.getpwnam(account.name).pw_passwd in ("x", "!", "*")  # shadowed
    with open(os.path.join(account.home, "notes.txt"), "w") as stream:
        stream.write("keep me")

    again = ensure_account(account.name)

    assert again == account
    with open(os.path.join(account.home, "notes.txt")) as stream:
        assert stream.read() == "keep me"


def test_the_account_cannot_log_in_with_a_password(make_account):
    account = make_account("dave")
    with open("/etc/shadow") as stream:
        hashes = dict(line.split(":")[:2] for line in stream)
    assert hashes[account.name].startswith("!")  # locked: no password opens it


def test_it_refuses_to_run_sessions_as_a_system_account():
    with pytest.raises(SessionHostError, match="system account"):
        ensure_account("daemon")


def test_removing_an_account_kills_its_processes_and_deletes_it(make_account):
    account = make_account("erin")
    run_as(account, ["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 < /dev/null &"])
    assert processes_of(account.uid)
    leftover = f"/tmp/{account.name}-leftover"
    assert run_as(account, ["mkdir", "-p", f"{leftover}/inner"]).returncode == 0

    remove_account(account.name)

    assert processes_of(account.uid) == []
    with pytest.raises(KeyError):
        pwd.getpwnam(account.name)
    assert not os.path.exists(account.home)
    assert not os.path.exists(leftover)  # the next account may get the same uid
    remove_account(account.name)  # a missing account is fine
