"""/readyz names what is not ready: a Redis that does not answer, no Celery worker (or no agent
of a host that has its own), a host that failed its check; 200 when everything answers."""

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from broker.models import Host
from tests.support.stack import ROOT


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readyz(client):
    response = client.get("/readyz")
    return response.status_code, response.json()


def test_a_stopped_redis_is_named(client, db):
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", VDI_READYZ_TIMEOUT_SECONDS=0.5):
        status, body = readyz(client)
    assert status == 503
    assert body["checks"]["database"]["ok"]
    assert {"redis", "workers"} <= set(body["failing"])
    assert "Connection" in body["checks"]["redis"]["detail"]


def test_no_worker_and_an_offline_host_are_named(client, db):
    Host.objects.create(name="hv-ok", libvirt_uri="test:///default", last_checked_at=timezone.now())
    Host.objects.create(name="hv-dead", libvirt_uri="test:///default", is_online=False,
                        last_error="connection refused", offline_since=timezone.now())
    with override_settings(VDI_READYZ_TIMEOUT_SECONDS=0.5):
        status, body = readyz(client)
    assert status == 503
    assert body["checks"]["redis"]["ok"], body
    # Other test runs' workers may share this Redis (each run has its own queue): then the
    # answer names this run's queue as the one nobody consumes.
    detail = body["checks"]["workers"]["detail"]
    assert ("no Celery worker answered" in detail
            or f"central workers (queue {settings.CELERY_TASK_DEFAULT_QUEUE})" in detail), detail
    assert body["checks"]["host:hv-ok"]["ok"]
    assert "connection refused" in body["checks"]["host:hv-dead"]["detail"]
    assert set(body["failing"]) == {"workers", "host:hv-dead"}


def test_details_are_for_allowed_addresses_only(client, db):
    with override_settings(VDI_METRICS_ALLOW=[], CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"):
        status, body = readyz(client)
    assert status == 503 and body == {"status": "not ready"}


@pytest.fixture
def worker():
    """A real Celery worker on the test run's broker and queue, named api-readyz@..."""
    env = {**os.environ, "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "CELERY_TASK_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE}
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
                                "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "-n", "api-readyz@%h", "--without-mingle",
                                "--without-gossip", "-l", "WARNING"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield process
    process.terminate()
    process.wait(timeout=30)


def test_a_live_worker_is_ready_and_a_hosts_missing_agent_is_named(client, db, worker):
    Host.objects.create(name="hv-ok", libvirt_uri="test:///default")
    deadline = time.monotonic() + 60
    while True:
        status, body = readyz(client)
        if body["checks"]["workers"]["ok"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200, body
    assert "api-readyz@" in body["checks"]["workers"]["detail"]
    Host.objects.create(name="hv-own", libvirt_uri="test:///default", has_own_agent=True)
    status, body = readyz(client)
    assert status == 503 and body["failing"] == ["workers"]
    assert "agent of host hv-own" in body["checks"]["workers"]["detail"]
