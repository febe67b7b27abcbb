"""Processes as the session host sees them, read straight from /proc.

Not `ps`/`pkill`: ending a session needs each process's owner, process session and start time
together, and the answer must not depend on a tool's output format or matching rules.
Everything here tolerates processes vanishing between two reads.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    uids: tuple[int, int, int]  # real, effective, saved
    sid: int  # the process session (setsid) it belongs to
    state: str  # "R", "S", ... "Z" for a zombie: dead, only waiting to be reaped
    start_ticks: int  # clock ticks after boot: with the pid, identifies one process for good

    @property
    def running(self) -> bool:
        return self.state not in ("Z", "X")

    def owned_by(self, uid: int) -> bool:
        return uid in self.uids


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            stat = stream.read().decode("ascii", "replace")
        with open(f"/proc/{pid}/status", "rb") as stream:
            status = stream.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces and ")".
    fields = stat[stat.rindex(")") + 2:].split()
    uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), None)
    if uid_line is None:
        return None
    real, effective, saved = (int(value) for value in uid_line.split()[1:4])
    return Proc(pid=pid, uids=(real, effective, saved), sid=int(fields[3]), state=fields[0],
                start_ticks=int(fields[19]))


def all_processes() -> Iterator[Proc]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = read_proc(int(entry))
            if proc is not None:
                yield proc


def running_processes(select: Callable[[Proc], bool]) -> list[Proc]:
    return [proc for proc in all_processes() if proc.running and select(proc)]


def command_line(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            raw = stream.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def environment_value(pid: int, name: str) -> str | None:
    """The variable as the process got it at exec (what /proc shows), or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as stream:
            raw = stream.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode("utf-8", "replace")
    return None


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def terminate(select: Callable[[Proc], bool], *, grace_s: float = 2.0, timeout_s: float = 10.0,
              reap: Callable[[], None] = lambda: None) -> list[int]:
    """SIGTERM every running process `select` picks, SIGKILL what is left after `grace_s`, and
    keep killing (a dying process may still fork) until none is left or `timeout_s` passed.

    `reap` collects our own exited children, which otherwise linger as zombies. Returns the
    pids that could not be killed (empty on success).
    """
    deadline = time.monotonic() + timeout_s
    kill_after = time.monotonic() + grace_s
    _signal([proc.pid for proc in running_processes(select)], signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
    while True:
        reap()
        left = [proc.pid for proc in running_processes(select)]
        if not left:
            return []
        if time.monotonic() >= deadline:
            return left
        if time.monotonic() >= kill_after:
            _signal(left, signal.SIGKILL)
        time.sleep(0.05)


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages are split among the processes that map them, so
    the figures of a host's sessions add up to what the host really spends on them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as stream:
            for line in stream.read().decode("ascii", "replace").splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0
