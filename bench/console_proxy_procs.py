"""The processes of the console proxy bench and what /proc says about them.

uvicorn is started exactly as scripts/run.sh starts it (`make run`); websockify 0.13 as the
plain reference relay; the fake VM as a process of its own. CPU and memory are read from
/proc for a process and all its descendants (websockify forks one process per connection;
an exited, reaped child's CPU moves into its parent's cutime/cstime, so nothing is lost).
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 60


class ProcessFailed(Exception):
    pass


def raise_open_files_limit() -> int:
    """1,000 consoles need ~3,000 descriptors across client, proxy and VM; children inherit it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- /proc --------------------------------------------------------------------------------------


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    children = _children_by_parent()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime, stime, cutime, cstime: fields 14-17 of stat(5), counted after the command name.
    return sum(int(value) for value in fields[11:15])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and all its descendants, living or reaped."""
    return sum(_cpu_ticks(p) for p in process_tree(pid)) / TICKS


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """Resident memory of the process and its descendants (shared pages counted in each)."""
    return sum(_rss_bytes(p) for p in process_tree(pid))


def wait_for_children_to_exit(pid: int, timeout_s: float = 5.0) -> None:
    """websockify's per-connection processes, so that their CPU lands in the parent's totals."""
    deadline = time.monotonic() + timeout_s
    while len(process_tree(pid)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)


# -- processes ----------------------------------------------------------------------------------


class Service:
    """A child process with its log file; stopped with its whole process group."""

    def __init__(self, name: str, argv: list[str], *, env: dict, log_path: Path):
        self.name, self.log_path = name, log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl+C reaches only the bench, which stops us in order
                preexec_fn=raise_open_files_limit,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ProcessFailed(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, 9)  # forked children left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


def start_vm(*, env: dict, log_dir: Path, security: str, password: str | None) -> tuple[Service, int]:
    argv = [sys.executable, str(ROOT / "bench" / "console_proxy_vm.py"), "--security", security]
    if password:
        argv += ["--password", password]
    service = Service("fake VM", argv, env=env, log_path=log_dir / "vm.log")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        service.check_alive()
        for line in service.log_path.read_text().splitlines():
            if line.startswith("listening "):
                return service, int(line.split()[1])
        time.sleep(0.05)
    service.stop()
    raise ProcessFailed(f"the fake VM did not start:\n{service.tail()}")


def start_uvicorn(*, env: dict, log_dir: Path, port: int, workers: int = 1) -> Service:
    """As scripts/run.sh starts the portal (`make run`), on a port of our own; `workers` > 1
    adds uvicorn's --workers (one process per core, as a bigger host would run it)."""
    service = Service("uvicorn", [
        str(BIN / "python"), "-m", "config.serve", "config.asgi:application", "--host", "127.0.0.1",
        "--port", str(port), *(["--workers", str(workers)] if workers > 1 else []),
    ], env=env, log_path=log_dir / "portal.log")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        service.check_alive()
        try:
            urlopen(f"http://127.0.0.1:{port}/login/", timeout=2).read()
            return service
        except OSError:
            time.sleep(0.1)
    service.stop()
    raise ProcessFailed(f"uvicorn did not answer in {START_TIMEOUT_S} s:\n{service.tail()}")


def start_websockify(*, env: dict, log_dir: Path, port: int, vm_port: int) -> Service:
    """The reference relay: plain websockify, no token plugin, one fixed target."""
    executable = BIN / "websockify"
    if not executable.exists():
        raise ProcessFailed(f"{executable} is missing: .venv/bin/pip install websockify==0.13.0")
    service = Service("websockify", [str(executable), f"127.0.0.1:{port}", f"127.0.0.1:{vm_port}"],
                      env=env, log_path=log_dir / "websockify.log")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        service.check_alive()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return service
        except OSError:
            time.sleep(0.1)
    service.stop()
    raise ProcessFailed(f"websockify did not listen in {START_TIMEOUT_S} s:\n{service.tail()}")


def websockify_version() -> str:
    try:
        from importlib.metadata import version

        return version("websockify")
    except Exception:  # noqa: BLE001 - only for the report
        return "?"
