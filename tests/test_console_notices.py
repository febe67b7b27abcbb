"""Messages for the person at a console: an admin's, and the warning a few minutes before an
idle console closes. They are text frames over the console's websocket (the page shows them
over the screen); they never reach the desktop."""

import asyncio
import json
import os
import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from websockets.exceptions import ConnectionClosed

from tests.support.console_client import open_console, portal_ticket, session_cookie, vnc_login_as_browser
from tests.support.mfa import verified_session

pytestmark = pytest.mark.django_db(transaction=True)
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


async def next_notice(ws, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        message = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        if isinstance(message, str) and message.startswith("vdi-notice "):
            return json.loads(message[len("vdi-notice "):])


def test_an_admins_message_appears_in_the_users_console(live_stack, echo_desktop, employee, echo_server):
    admin = get_user_model().objects.create_superuser("root-admin", password="admin-pass-123")
    browser = Client()
    verified_session(browser, admin)  # staff: a second factor, as in production (tests/support/mfa.py)
    cookie = session_cookie(employee)

    async def session():
        ws = await open_console(live_stack, echo_desktop.pk,
                                portal_ticket(live_stack, employee, echo_desktop, cookie, echo_server), cookie=cookie)
        await vnc_login_as_browser(ws)
        response = await asyncio.to_thread(browser.post, reverse("admin:broker_desktop_changelist"), {
            "action": "send_message", "_selected_action": [echo_desktop.pk], "apply": "Send",
            "message": "The server restarts at 18:00; save your work."})
        assert response.status_code == 302
        notice = await next_notice(ws)
        await ws.close()
        return notice

    notice = asyncio.run(session())
    assert notice == {"text": "Message from root-admin: The server restarts at 18:00; save your work.",
                      "level": "info"}


def test_an_idle_console_is_warned_before_it_closes(live_stack, echo_desktop, employee, echo_server):
    pool = echo_desktop.pool
    pool.console_idle_timeout_minutes = 0.1  # 6 s; the warning comes a fifth of it before
    pool.save()
    cookie = session_cookie(employee)

    async def session():
        ws = await open_console(live_stack, echo_desktop.pk,
                                portal_ticket(live_stack, employee, echo_desktop, cookie, echo_server), cookie=cookie)
        await vnc_login_as_browser(ws)
        opened = time.monotonic()
        notice = await next_notice(ws, timeout=15)
        warned_after = time.monotonic() - opened
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 15)
        except ConnectionClosed as closed:
            return notice, warned_after, closed.rcvd.code, time.monotonic() - opened

    notice, warned_after, code, closed_after = asyncio.run(session())
    assert notice["level"] == "warning" and "this console closes in" in notice["text"]
    assert 3 <= warned_after < closed_after  # before the close, not at once
    assert code == 4431
