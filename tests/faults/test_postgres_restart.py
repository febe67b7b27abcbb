"""Fault: PostgreSQL restarts (a private cluster of the test's own: the machine's is shared).
While it is down the portal answers 503 with a page that says what is going on, never a 500
or a trace; when it is back the portal serves again by itself, without a restart."""

import subprocess
import sys

import pytest

from tests.support.fault_stack import Browser, FaultStack, PrivatePostgres
from tests.support.stack import ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SEED = """
from django.contrib.auth import get_user_model
get_user_model().objects.create_user("dora", password="dora-pass-1234")
"""


@pytest.fixture(scope="module")
def postgres():
    cluster = PrivatePostgres()
    cluster.init()
    env = {"DATABASE_URL": cluster.url, "PATH": "/usr/bin:/bin"}
    for argv in (["migrate", "-v", "0"], ["shell", "-c", SEED]):
        subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, check=True, timeout=300,
                       env={**__import__("os").environ, **env})
    yield cluster
    cluster.remove()


@pytest.fixture(scope="module")
def portal(postgres):
    # A request waits at most 3 s for a database connection (production: 20 s) before its 503.
    stack = FaultStack("postgres", env={"DATABASE_URL": postgres.url, "DATABASE_POOL_TIMEOUT": "3"}, worker=False)
    stack.start()
    yield stack
    stack.stop()


def test_the_portal_says_503_while_postgres_is_down_and_recovers_by_itself(postgres, portal):
    dora = Browser(portal)
    dora.get("/login/")
    logged_in = dora.post("/login/", {"username": "dora", "password": "dora-pass-1234"})
    assert logged_in.status_code == 302, logged_in.text[:300]
    assert dora.get("/").status_code == 200

    postgres.stop()
    try:
        for path in ("/", "/login/", "/desktops/1/status/"):
            answer = dora.get(path)
            assert answer.status_code == 503, (path, answer.status_code, answer.text[:300])
            assert "temporarily unavailable" in answer.text and "Traceback" not in answer.text
            assert answer.headers["Retry-After"] == "15"
    finally:
        postgres.start()

    # Back by itself: the same login session, no restart of the portal.
    wait_until(lambda: dora.get("/").status_code == 200, timeout=20, what="the portal to serve again")
    answers = [dora.get("/").status_code for _ in range(12)]
    assert answers == [200] * 12, answers
    assert postgres.sql("select username from auth_user") == [["dora"]]


QUEUE_WHILE_DOWN = "pg-fault-queue"

IMAGE_VERSION = """
import pathlib
from broker.models import GoldenImage, GoldenImageVersion
path = pathlib.Path("{path}")
path.write_bytes(b"golden" * 1000)
image = GoldenImage.objects.create(name="pg-fault", display_name="PG fault")
print(GoldenImageVersion.objects.create(image=image, number=1, path=str(path)).pk)
"""


@pytest.fixture(scope="module")
def worker(postgres):
    # The portal and a worker of their own on the private cluster, their own queue.
    stack = FaultStack("postgres-worker", env={"DATABASE_URL": postgres.url, "DATABASE_POOL_TIMEOUT": "3",
                                               "CELERY_TASK_DEFAULT_QUEUE": QUEUE_WHILE_DOWN})
    stack.start()
    yield stack
    stack.stop()


def test_a_task_sent_while_postgres_is_down_runs_when_it_is_back(postgres, worker, tmp_path):
    import os

    from broker.tasks import checksum_image_version_task

    made = subprocess.run([sys.executable, "manage.py", "shell", "-c", IMAGE_VERSION.format(path=tmp_path / "v1.qcow2")],
                          cwd=ROOT, check=True, timeout=120, capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": postgres.url})
    version_id = int(made.stdout.split()[-1])

    postgres.stop()
    try:
        checksum_image_version_task.apply_async(args=[version_id], queue=QUEUE_WHILE_DOWN)
        log = worker.log_dir / "worker.log"
        wait_until(lambda: "Retry in" in log.read_text(errors="replace"), timeout=60,
                   what=f"the worker to schedule a retry of the task; see {log}")
    finally:
        postgres.start()

    # Not lost: the retry runs once the database answers again.
    checksum_length = f"select length(sha256) from broker_goldenimageversion where id = {version_id}"
    wait_until(lambda: postgres.sql(checksum_length) == [["64"]], timeout=120,
               what=f"the checksum written by the retried task; see {log}")
    assert "OperationalError" in log.read_text(errors="replace")
