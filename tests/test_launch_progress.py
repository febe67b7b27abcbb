"""The launch page's steps arrive over a websocket the moment they happen, for the desktop's
own user only, from the portal's own Origin."""

import asyncio
import json
import os

import pytest
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broker.models import Desktop, DesktopState
from tests.support.console_client import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
S = DesktopState


@pytest.fixture
def queued(pool, employee, host):
    return Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                  name="vditest-progress", state=S.QUEUED)


def progress_socket(stack, desktop, cookie, origin=None):
    return connect(f"ws://127.0.0.1:{stack.port}/ws/launch/{desktop.pk}/", origin=origin or stack.base_url,
                   additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}, open_timeout=10)


def test_each_step_reaches_the_page_as_it_happens(live_stack, queued, employee):
    cookie = session_cookie(employee)

    async def follow():
        seen = []
        async with progress_socket(live_stack, queued, cookie) as ws:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["state"])
            for step in (S.CLONING, S.STARTING, S.RUNNING):
                await asyncio.to_thread(lambda s=step: Desktop.objects.get(pk=queued.pk).transition(s))
                progress = json.loads(await asyncio.wait_for(ws.recv(), 5))
                seen.append(progress["state"])
            assert progress["ready"]
            await asyncio.wait_for(ws.wait_closed(), 5)  # done: the page opens the console now
        return seen

    assert asyncio.run(follow()) == ["queued", "cloning", "starting", "running"]


@pytest.mark.parametrize("who", ["another employee", "a foreign page", "nobody"])
def test_nobody_else_sees_the_progress(live_stack, queued, other_employee, employee, who):
    cookie = {"another employee": session_cookie(other_employee), "nobody": "no-such-session"}.get(
        who, session_cookie(employee))
    origin = "http://evil.example" if who == "a foreign page" else None

    async def attempt():
        async with progress_socket(live_stack, queued, cookie, origin=origin) as ws:
            return await ws.recv()

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(attempt())
    assert refused.value.response.status_code == 403
