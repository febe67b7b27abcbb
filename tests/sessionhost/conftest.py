"""Fixtures for the session host: a throwaway state directory and real OS accounts named
`vdt{random}-…`, removed (with every process they still run) after each test, pass or fail.

These tests need root, Xvnc and the desktop packages; no database."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile

import pytest

from broker.sessionhost import (
    account_name,
    end_session,
    ensure_account,
    list_sessions,
    remove_account,
    start_session,
)
from broker.sessionhost.procfs import running_processes

PREFIX = f"vdt{secrets.token_hex(2)}-"  # this run's accounts, and only them, are removed


@pytest.fixture
def state_dir():
    # Not tmp_path: /tmp/pytest-of-root is 0700, and Xvnc, running as the test account, must
    # traverse the state directory to open its password file.
    path = tempfile.mkdtemp(prefix="vdt-sessions-", dir="/tmp")
    os.chmod(path, 0o711)
    yield path
    for session in list_sessions(path):
        end_session(session_name=session.session_name, state_dir=path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_account():
    """make_account("alice") -> a real account for broker user "alice" (a new user id each)."""
    created = []

    def make(username: str):
        name = account_name(prefix=PREFIX, user_id=len(created) + 1, username=username)
        created.append(name)
        return ensure_account(name)

    yield make
    for name in created:
        remove_account(name)


@pytest.fixture(scope="session", autouse=True)
def _no_test_account_left_behind():
    yield
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(PREFIX):
            remove_account(entry.pw_name)


@pytest.fixture
def alice(make_account):
    return make_account("Alice.Martin")


@pytest.fixture
def alice_desktop(alice, state_dir):
    """A running desktop session of alice's, VNC password "first-pw"."""
    return start_session(session_name="alice-desk", account=alice, kind="desktop", command=None,
                         password="first-pw", state_dir=state_dir)


def processes_of(uid: int) -> list[int]:
    return [proc.pid for proc in running_processes(lambda proc: proc.owned_by(uid))]


def proc_file(pid: int, name: str) -> bytes:
    """/proc/PID/NAME, or b"" for a process that has just exited."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as stream:
            return stream.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def command_names_of(uid: int) -> set[str]:
    return {proc_file(pid, "comm").decode().strip() for pid in processes_of(uid)} - {""}


def run_as(account, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    """argv as `account` (runuser, no login), with only the environment given here."""
    environment = [f"{name}={value}" for name, value in {"PATH": "/usr/bin:/bin", "HOME": account.home, **env}.items()]
    return subprocess.run(["runuser", "-u", account.name, "--", "env", "-i", *environment, *argv],
                          capture_output=True, text=True, timeout=30, check=False)
