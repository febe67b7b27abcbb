"""The components a fault test breaks, each its own: a private Redis, a private PostgreSQL
cluster, and a live stack (portal, worker, optionally beat) pointed at them. The machine's
shared PostgreSQL, Redis and libvirtd are never stopped: other test runs use them."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests
from django.conf import settings

from config.redis_urls import celery_broker_url
from config.serve import uvicorn_argv
from tests.support.console_client import session_cookie
from tests.support.stack import BIN, ROOT, LiveStack, free_port
from tests.support.waiting import wait_until


class PrivateRedis:
    """A redis-server of the test's own on a unix socket, configured as the project's scripts
    configure theirs (no persistence: a restart loses what was queued, as it would there)."""

    def __init__(self):
        # A short path: unix socket paths are limited to 107 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="vdi-redis-"))
        self.socket = self.directory / "redis.sock"
        self.url = f"unix://{self.socket}?db=0"
        self.process: subprocess.Popen | None = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--logfile", str(self.directory / "redis.log")])
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-s", str(self.socket), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, f"the private Redis did not start; see {self.directory}"
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None

    def remove(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temp dir, owned by the postgres OS
    user), on a free port, tuned for speed (no fsync): stopped and started by the test."""

    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="vdi-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/vdi"

    def _as_postgres(self, *argv, check=True):
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                              check=check, timeout=120)

    def init(self):
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8")
        self.start()
        self._as_postgres(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "vdi")

    def start(self):
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB -c max_connections=60")
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "log"),
                          "-o", options, "-w", "start")

    def stop(self):
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def remove(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def sql(self, query: str) -> list[list[str]]:
        """Rows of `query`, as psql prints them (|-separated), for asserting what was left."""
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "vdi",
                              "-tA", "-c", query], capture_output=True, text=True, check=True, timeout=30).stdout
        return [line.split("|") for line in out.splitlines() if line]


class FaultStack(LiveStack):
    """The live stack (portal and worker, and a beat if asked) with some of its environment
    replaced: another Redis, another database, shorter periods."""

    def __init__(self, name: str, *, env: dict, beat: bool = False, worker: bool = True):
        super().__init__()
        self.extra_env = env
        self.with_beat = beat
        self.with_worker = worker
        self.log_dir = self.log_dir / name
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict:
        return {**super().env(), **self.extra_env}

    def start(self):
        if not self.with_worker:  # the portal alone (its tasks go to the session's live stack)
            self.portal = self._spawn("portal", uvicorn_argv(str(BIN / "python"), "config.asgi:application",
                                                             "--host", "127.0.0.1", "--port", str(self.port)))
            wait_until(lambda: self._answers(), timeout=60, what=f"the portal; see {self.log_dir}")
            return
        super().start()
        if self.with_beat:
            self.beat = self.start_beat("beat")

    def _answers(self) -> bool:
        assert self.portal.poll() is None, f"the portal exited; see {self.log_dir}"
        try:
            return requests.get(f"{self.base_url}/login/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start_beat(self, name: str) -> subprocess.Popen:
        schedule = self.log_dir / f"{name}-schedule"
        return self._spawn(name, [str(BIN / "celery"), "-A", "config", "beat", "--loglevel=INFO",
                                  "-s", str(schedule), "--pidfile", ""])

    def restart_worker(self):
        self.worker.terminate()
        self.worker.wait(timeout=20)
        self.processes.remove(self.worker)
        self.worker = self._spawn("worker-again", [
            str(BIN / "celery"), "-A", "config", "worker", "--loglevel=INFO", "--concurrency=2",
            "--without-mingle", "--without-gossip", "--hostname", f"test-{self.port}b@%h",
        ])


def redis_env(redis: PrivateRedis) -> dict:
    return {"REDIS_URL": redis.url, "CHANNEL_LAYER_URL": redis.url, "CELERY_BROKER_URL": celery_broker_url(redis.url),
            "CELERY_RESULT_BACKEND": celery_broker_url(redis.url)}


class Browser:
    """What a browser does on the portal over HTTP: a session cookie, CSRF token, forms."""

    def __init__(self, stack, user=None, *, cookie: str | None = None):
        self.stack = stack
        self.http = requests.Session()
        self.cookie = cookie or (session_cookie(user) if user is not None else None)
        if self.cookie:
            self.http.cookies.set(settings.SESSION_COOKIE_NAME, self.cookie)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.stack.base_url + path, timeout=15, allow_redirects=False, **kwargs)

    def post(self, path: str, data=None) -> requests.Response:
        if "csrftoken" not in self.http.cookies:
            self.get("/")
        return self.http.post(self.stack.base_url + path, data=data or {}, timeout=30, allow_redirects=False,
                              headers={"X-CSRFToken": self.http.cookies.get("csrftoken", ""),
                                       "Origin": self.stack.base_url})
