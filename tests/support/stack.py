"""Start the real portal (uvicorn) and a real Celery worker against the test database."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

from django.conf import settings

from config.serve import uvicorn_argv

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class LiveStack:
    def __init__(self):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(settings.VAR_DIR) / "test-logs" / settings.VDI_NAME_PREFIX.rstrip("-")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen] = []

    def env(self) -> dict:
        return {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_TASK_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "VDI_NAME_PREFIX": settings.VDI_NAME_PREFIX,
            "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "PYTHONUNBUFFERED": "1",
            "VDI_CONSOLE_RECHECK_SECONDS": "2",
            "VDI_AGENT_QUEUE_PREFIX": settings.VDI_AGENT_QUEUE_PREFIX,
            "VDI_SESSION_ACCOUNT_PREFIX": settings.VDI_SESSION_ACCOUNT_PREFIX,
            "VDI_SESSION_STATE_DIR": settings.VDI_SESSION_STATE_DIR,
        }

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        process = subprocess.Popen(argv, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start(self):
        # Messages left by an earlier, interrupted run would point at rows that no longer exist.
        subprocess.run([str(BIN / "celery"), "-A", "config", "purge", "-f"], cwd=ROOT, env=self.env(),
                       check=True, capture_output=True)
        self.worker = self._spawn("worker", [
            str(BIN / "celery"), "-A", "config", "worker", "--loglevel=INFO", "--concurrency=2",
            "--without-mingle", "--without-gossip", "--hostname", f"test-{self.port}@%h",
        ])
        self.portal = self._spawn("portal", [
            *uvicorn_argv(str(BIN / "python"), "config.asgi:application", "--host", "127.0.0.1",
                          "--port", str(self.port)),
        ])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited; see {self.log_dir}")
            try:
                urlopen(f"{self.base_url}/login/", timeout=2).read()
                if "ready" in (self.log_dir / "worker.log").read_text():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the live stack did not come up in 60 s; see {self.log_dir}")

    def start_agent(self, host) -> subprocess.Popen:
        """The session agent of `host`, as the README starts it: a Celery worker on the host's
        own queue (this machine is the session host)."""
        name = f"agent-{host.name}"
        agent = self._spawn(name, [
            str(BIN / "celery"), "-A", "config", "worker", "-Q", host.agent_queue, "--pool", "threads",
            "--concurrency", "8", "--loglevel=INFO", "--without-mingle", "--without-gossip",
            "--hostname", f"{host.agent_queue}-{self.port}@%h",
        ])
        deadline = time.monotonic() + 60
        while "ready" not in (self.log_dir / f"{name}.log").read_text():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent of {host.name} did not start; see {self.log_dir}")
            time.sleep(0.2)
        return agent

    def stop(self):
        subprocess.run([str(BIN / "celery"), "-A", "config", "purge", "-f"], cwd=ROOT, env=self.env(),
                       capture_output=True)
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.log_dir.glob("*.log")))
