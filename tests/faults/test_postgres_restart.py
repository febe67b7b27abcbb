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
