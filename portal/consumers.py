"""The launch page's live progress: a websocket that sends the desktop's steps each time they
change (broker/progress.py announces every state change), so the page shows them the moment
they happen without polling. Closes once the desktop is ready or failed; the page then opens
the console (or shows the error). Only the desktop's own user, from an allowed Origin."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer

from broker.database_threads import in_a_database_thread
from broker.console.login import cookie_header, login_from_cookie_header
from broker.console.origin import is_allowed_origin
from broker.models import Desktop
from broker.models.desktops import LIVE_STATES
from broker.progress import progress_group

from .progress import desktop_progress


class LaunchProgressConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.desktop_id = int(self.scope["url_route"]["kwargs"]["desktop_id"])
        self.user_id = None
        if not is_allowed_origin(self.scope):
            return await self.close(code=4403)  # refused before accept: the browser sees a 403
        if not 0 < self.desktop_id < 2**63:  # no such row; and its group name would be too long (a crash)
            return await self.close(code=4404)
        # The login and the first read are one trip to a database thread (under a logon storm
        # each trip waits its turn). A desktop already ready or failed is answered at once; one
        # on its way is listened to, then read again, so a step taken in between is not missed.
        # No message reaches this page before connect() returns (Channels dispatches one at a
        # time), so a refused client hears nothing.
        self.group = None
        self.user_id, progress = await in_a_database_thread(self._login_and_progress)(cookie_header(self.scope))
        if self.user_id is not None and progress is not None and not (progress["ready"] or progress["failed"]):
            self.group = progress_group(self.desktop_id)
            await self.channel_layer.group_add(self.group, self.channel_name)
            progress = await in_a_database_thread(self._progress)()
        if self.user_id is None or progress is None:
            if self.group is not None:
                await self.channel_layer.group_discard(self.group, self.channel_name)
                self.group = None
            return await self.close(code=4401 if self.user_id is None else 4404)
        await self.accept()
        await self._send_progress(progress)

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        pass  # the page only listens

    async def launch_progress(self, event):
        await self._send_progress(await in_a_database_thread(self._progress)())

    async def _send_progress(self, progress):
        if progress is None:
            return await self.close(code=4404)
        await self.send(text_data=json.dumps(progress))
        if progress["ready"] or progress["failed"]:
            await self.close(code=1000)

    def _login_and_progress(self, cookies):
        user, _session_key = login_from_cookie_header(cookies)
        if not user.is_authenticated:
            return None, None
        self.user_id = user.pk
        return user.pk, self._progress()

    def _progress(self):
        # The pool only: a host is read when the steps name it (a farm session starting).
        desktop = (Desktop.objects.select_related("pool")
                   .filter(pk=self.desktop_id, user_id=self.user_id, state__in=LIVE_STATES).first())
        return desktop_progress(desktop) if desktop is not None else None
