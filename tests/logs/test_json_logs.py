"""Logs: a launch through the live portal leaves JSON lines in the portal's log and in the logs
of the workers that ran its tasks (here the host's own agent, a Celery worker on the host's
queue) carrying one request id, the one the launch's response names in X-Request-ID; the
console it opens is logged by the gateway with a request id, the desktop and the ticket's id.
No line holds the password, the session cookie, the console ticket or the secret key."""

import asyncio
import json
import os
import re
import uuid

import pytest
from django.conf import settings

from broker.models import Desktop, DesktopState, Host
from tests.support.console_client import open_console, vnc_login_as_browser
from tests.support.fault_stack import Browser
from tests.support.waiting import wait_for_state, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.libvirt]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def json_lines(stack, name: str, since: int = 0) -> list[dict]:
    """The log's lines from byte `since` on, each parsed as JSON (a line that is not JSON fails
    the test, except what Celery prints on stdout before logging starts: its banner)."""
    text = (stack.log_dir / f"{name}.log").read_bytes()[since:].decode()
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
        else:
            assert not re.match(r"\d{4}-\d\d-\d\d[ T]", line), f"a log line that is not JSON: {line!r}"
    return lines


def sizes(stack) -> dict[str, int]:
    return {p.stem: p.stat().st_size for p in stack.log_dir.glob("*.log")}


@pytest.fixture(params=["worker", "agent"])
def task_log(request, live_stack, host):
    """Where the launch's tasks run, and so which log must carry its request id: the central
    Celery worker, or the agent of a host that has its own (a separate Celery worker on the
    host's queue, with its own log, that also sets the console's one-time password)."""
    if request.param == "worker":
        return "worker"
    Host.objects.filter(pk=host.pk).update(has_own_agent=True)
    host.refresh_from_db()
    if not (live_stack.log_dir / f"agent-{host.name}.log").exists():
        live_stack.start_agent(host)
    return f"agent-{host.name}"


def test_a_launch_is_followed_by_its_request_id_from_the_view_into_its_tasks_and_console(
        live_stack, task_log, pool, employee):
    before = sizes(live_stack)
    browser = Browser(live_stack)
    browser.get("/login/")
    logged_in = browser.http.post(
        f"{live_stack.base_url}/login/", data={"username": "alice", "password": "correct-horse-9"},
        headers={"X-CSRFToken": browser.http.cookies["csrftoken"], "Referer": f"{live_stack.base_url}/login/"},
        allow_redirects=False, timeout=30)
    assert logged_in.status_code == 302, logged_in.text[:300]

    # A client's own X-Request-ID is not believed (no trusted proxy here): a fresh id is made.
    picked = "client-picked-" + uuid.uuid4().hex
    launched = browser.http.post(
        f"{live_stack.base_url}/pools/{pool.pk}/launch/", timeout=30, allow_redirects=False,
        headers={"X-CSRFToken": browser.http.cookies["csrftoken"], "Origin": live_stack.base_url,
                 "X-Request-ID": picked})
    assert launched.status_code == 302, launched.text[:300]
    request_id = launched.headers["X-Request-ID"]
    assert request_id != picked and uuid.UUID(request_id)
    desktop_id = int(re.search(r"/desktops/(\d+)/", launched.headers["Location"]).group(1))
    wait_for_state(Desktop.objects.get(pk=desktop_id), DesktopState.RUNNING, timeout=180)

    ticketed = browser.http.post(
        f"{live_stack.base_url}/desktops/{desktop_id}/console-ticket/", timeout=60,
        headers={"X-CSRFToken": browser.http.cookies["csrftoken"], "Origin": live_stack.base_url})
    assert ticketed.status_code == 200, ticketed.text[:300]
    ticket_request_id = ticketed.headers["X-Request-ID"]
    token = re.search(r"ticket=([^&]+)", ticketed.json()["url"]).group(1)
    cookie = browser.http.cookies[settings.SESSION_COOKIE_NAME]

    async def console():
        ws = await open_console(live_stack, desktop_id, token, cookie=cookie)
        assert await vnc_login_as_browser(ws) == [1]
        await ws.close()

    asyncio.run(console())

    def lines_with(name, rid):
        return [line for line in json_lines(live_stack, name, before.get(name, 0)) if line.get("request_id") == rid]

    # The portal: the launch request's own lines, with the user and the client's address.
    wait_until(lambda: any(l["event"] == "request_finished" for l in lines_with("portal", request_id)),
               timeout=20, what="the portal's line of the launch")
    portal = lines_with("portal", request_id)
    assert {"request_started", "request_finished", "task_enqueued"} <= {l["event"] for l in portal}, portal
    finished = next(l for l in portal if l["event"] == "request_finished")
    assert finished["request"] == f"POST /pools/{pool.pk}/launch/" and finished["code"] == 302
    assert finished["user_id"] == employee.pk and finished["ip"] == "127.0.0.1"

    # The tasks the launch started, in the worker that ran them, with their own task ids and
    # the launch's request id.
    wait_until(lambda: any(l["event"] == "task_succeeded" for l in lines_with(task_log, request_id)),
               timeout=30, what=f"the lines of the launch's tasks in {task_log}.log")
    ran = lines_with(task_log, request_id)
    assert {l["task"] for l in ran if l["event"] == "task_started"} >= {"broker.tasks.provision_desktop_task"}, ran
    assert all(l.get("task_id") and l["user_id"] == employee.pk for l in ran if l["event"] == "task_started")
    if task_log.startswith("agent"):  # the console ticket's request: the agent set its password
        assert any(l["event"] == "task_started" for l in lines_with(task_log, ticket_request_id))

    # The gateway (served by the portal process here): the console's lines carry the ticket
    # request's id (the trail goes on from the page's request), the websocket's own, the
    # desktop and the ticket's database id; never the ticket itself.
    wait_until(lambda: any(l["event"].startswith("console closed") for l in json_lines(live_stack, "portal", before["portal"])),
               timeout=20, what="the gateway's line of the console's end")
    gateway = [l for l in json_lines(live_stack, "portal", before["portal"])
               if l["event"].startswith("console ") and l.get("desktop_id") == desktop_id]
    opened = next(l for l in gateway if l["event"].startswith("console opened"))
    assert opened["request_id"] == ticket_request_id and opened["ticket_id"] and opened["console_session_id"]
    assert opened["websocket_request_id"] not in (ticket_request_id, request_id)
    assert {l["request_id"] for l in gateway} == {ticket_request_id} and len(gateway) >= 2, gateway

    # No secret in any line this test caused, in any process's log.
    written = "".join((live_stack.log_dir / f"{name}.log").read_bytes()[since:].decode()
                      for name, since in {**{n: 0 for n in sizes(live_stack)}, **before}.items())
    for secret in ("correct-horse-9", token, cookie, settings.SECRET_KEY, picked):
        assert secret not in written


def test_a_request_id_from_a_trusted_proxy_is_kept_and_from_anyone_else_replaced():
    from config.forwarded import behind_trusted_proxies

    seen = []

    async def app(scope, receive, send):
        seen.append((scope["client"][0], dict(scope["headers"]).get(b"x-request-id")))

    def request(peer, request_id, trusted):
        scope = {"type": "http", "client": (peer, 5555), "scheme": "http",
                 "headers": [(b"x-request-id", request_id), (b"x-forwarded-for", b"198.51.100.7")]}
        asyncio.run(behind_trusted_proxies(app, trusted)(scope, None, None))
        return seen.pop()

    assert request("10.0.0.5", b"nginx-5f2c", "10.0.0.5") == ("198.51.100.7", b"nginx-5f2c")
    assert request("10.0.0.6", b"nginx-5f2c", "10.0.0.5") == ("10.0.0.6", None)
    assert request("127.0.0.1", b"nginx-5f2c", "") == ("127.0.0.1", None)
    # Even a trusted proxy's id must look like an id, not a line of its own in the log.
    assert request("10.0.0.5", b'x" injected\n{"event": 1}', "10.0.0.5") == ("198.51.100.7", None)


def test_the_log_format_is_json_or_text_and_nothing_else():
    from config.logs import log_format

    assert log_format("") == "json" and log_format("TEXT") == "text"
    with pytest.raises(ValueError, match="VDI_LOG_FORMAT"):
        log_format("xml")
