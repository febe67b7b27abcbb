"""No secret in the logs, the error pages or the page source, across a real login, launch,
console ticket, console (the gateway's VNC login to the desktop), an API call with a token and
a readiness probe against a Redis that needs a password. Every line every logger writes goes
through the project's own log handler (with its filters) into a buffer that is then searched
for each secret."""

import asyncio
import io
import logging
import os

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.test import Client
from rest_framework.authtoken.models import Token

from broker.console.tickets import unseal_password
from broker.models import ConsoleTicket
# Imported before the log capture starts: its django.setup() configures logging afresh.
from config.asgi import application

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

PASSWORD = "correct-horse-9"  # the employee fixture's
WRONG_PASSWORD = "Wrong-Guess-4711"
REDIS_PASSWORD = "s3cret-redis-pw-93"


@pytest.fixture
def logged_lines():
    """Everything the configured handlers write (at DEBUG, stricter than production's INFO)."""
    buffer = io.StringIO()
    root = logging.getLogger()
    handlers = [h for h in root.handlers if type(h) is logging.StreamHandler]  # LOGGING's, not pytest's
    assert handlers, "the root logger has no stream handler: LOGGING changed?"
    saved = [(h, h.stream, h.level) for h in handlers]
    level = root.level
    for handler in handlers:
        handler.setStream(buffer)
        handler.setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.setLevel(level)
    for handler, stream, handler_level in saved:
        handler.setStream(stream)
        handler.setLevel(handler_level)


async def open_console(path, cookie):
    raw, _, query = path.partition("?")
    communicator = ApplicationCommunicator(application, {
        "type": "websocket", "path": raw, "query_string": query.encode(), "scheme": "ws",
        "headers": [(b"host", b"testserver"), (b"origin", b"http://testserver"),
                    (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())],
        "subprotocols": ["binary"], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)})
    await communicator.send_input({"type": "websocket.connect"})
    answers = [await asyncio.wait_for(communicator.output_queue.get(), 10)]
    assert answers[0]["type"] == "websocket.accept", answers
    received = b""
    while len(received) < 12:
        received += (await asyncio.wait_for(communicator.output_queue.get(), 10)).get("bytes") or b""
    await communicator.send_input({"type": "websocket.receive", "bytes": b"RFB 003.008\n"})
    await communicator.send_input({"type": "websocket.receive", "bytes": b"\x01"})
    await communicator.send_input({"type": "websocket.receive", "bytes": b"\x01"})  # ClientInit
    while len(received) < 12 + 2 + 4 + 24:  # ... and the desktop's ServerInit
        received += (await asyncio.wait_for(communicator.output_queue.get(), 10)).get("bytes") or b""
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait(timeout=15)
    return received


@pytest.mark.django_db(transaction=True)
@pytest.mark.libvirt
def test_no_secret_in_logs_pages_or_error_pages(logged_lines, employee, pool, running_desktop, settings):
    desktop = running_desktop  # a real TCG guest on libvirtd: its VNC server checks the one-time password
    pages = {}
    browser = Client()

    # A wrong password, then the right one (the login page's POST carries both).
    pages["failed login"] = browser.post("/login/", {"username": employee.username, "password": WRONG_PASSWORD})
    response = browser.post("/login/", {"username": employee.username, "password": PASSWORD})
    assert response.status_code == 302
    session_key = browser.cookies[settings.SESSION_COOKIE_NAME].value

    pages["home"] = browser.get("/")
    launched = browser.post(f"/pools/{pool.pk}/launch/")
    assert launched.status_code == 302 and launched["Location"] == f"/desktops/{desktop.pk}/"
    pages["desktop"] = browser.get(f"/desktops/{desktop.pk}/")
    pages["status"] = browser.get(f"/desktops/{desktop.pk}/status/")
    granted = browser.post(f"/desktops/{desktop.pk}/console-ticket/")
    assert granted.status_code == 200, granted.content
    ws_url = granted.json()["url"]
    token = ws_url.split("ticket=", 1)[1]
    ticket = ConsoleTicket.objects.get()
    console_password = unseal_password(ticket.sealed_password, token)
    assert len(console_password) >= 6 and "password" not in granted.json()  # VNC: it stays on the server

    # The gateway logs in to QEMU's VNC server with that password and relays its ServerInit.
    received = asyncio.run(open_console(ws_url.split("testserver", 1)[1], session_key))
    assert received[:12] == b"RFB 003.008\n" and len(received) >= 42

    api_key = Token.objects.create(user=employee).key
    pages["api as employee"] = Client(HTTP_AUTHORIZATION=f"Token {api_key}").get("/api/v1/desktops/")
    pages["not found"] = browser.get("/no/such/page/")
    pages["another desktop"] = browser.get("/desktops/999999/")
    settings.CELERY_BROKER_URL = f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"  # nothing listens on port 1
    pages["readyz"] = Client().get("/readyz")
    from config.unavailable import server_error
    from django.test import RequestFactory

    pages["500 page"] = server_error(RequestFactory().get("/"))
    database_password = settings.DATABASES["default"].get("PASSWORD") or None

    secrets = {"the password": PASSWORD, "the wrong password": WRONG_PASSWORD, "the console ticket": token,
               "the VNC password": console_password, "the API token": api_key, "SECRET_KEY": settings.SECRET_KEY,
               "the session key": session_key, "the Redis password": REDIS_PASSWORD,
               "the database password": database_password}
    logs = logged_lines.getvalue()
    assert f"console opened: desktop={desktop.pk}" in logs  # the buffer saw the flow
    for what, secret in secrets.items():
        if not secret:
            continue
        assert secret not in logs, f"{what} is in the logs"
        for page, response in pages.items():
            body = response.content.decode(errors="replace")
            assert secret not in body, f"{what} is in the {page} page"
            assert secret not in str(response.headers), f"{what} is in the {page} page's headers"
