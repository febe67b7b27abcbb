"""Django's ASGI handler, with each request's middleware and view run in one trip to the
request's thread instead of three, and no more requests at once than the process has
database connections for.

Django under ASGI builds its middleware chain for async callers. Ours is sync (WhiteNoise and
two of our own middlewares only have a sync form; Django's MiddlewareMixin ones, run async,
would take two thread trips each), so a request went to its thread for the chain, back to the
event loop for the one async-capable middleware at its end (django-structlog's), and to the
thread again for the view. Here the chain is built for sync callers, as under WSGI, and the
event loop hands the whole of it to the thread once.

Each request runs in a thread of its own (Django's ThreadSensitiveContext) and holds a pooled
connection from its first query to its end. Under bench/logon_storm.py's storm more requests
were in flight than the pool had connections, and requests and consoles waited for one (up to
DATABASE_POOL_TIMEOUT): here at most PORTAL_REQUEST_SLOTS requests run at once, the rest wait
in the event loop holding nothing, and each gives its connection back as soon as its response
is made (before it is sent). The websockets' database threads have the rest of the pool
(config/settings.py). Everything else is Django's ASGIHandler: reading the body, the request
signals, the disconnect watch, sending the response.
"""

import asyncio

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections


class OneTripASGIHandler(ASGIHandler):
    def __init__(self):
        super().__init__()
        self._slots, self._slots_loop = None, None

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        async with self._request_slots():
            return await sync_to_async(self._respond, thread_sensitive=True)(request)

    def _request_slots(self) -> asyncio.Semaphore:
        # One per event loop (a semaphore belongs to the loop it first waited in): uvicorn runs
        # one loop per process; tests may run several, one after the other.
        loop = asyncio.get_running_loop()
        if self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(settings.PORTAL_REQUEST_SLOTS), loop
        return self._slots

    def _respond(self, request):
        try:
            # BaseHandler.get_response: the sync chain, its resource closers and error logging.
            return self.get_response(request)
        finally:
            # The connection back to the pool now (CONN_MAX_AGE is 0 with a pool), not after
            # the response is sent: request_finished does the same again, with nothing to do.
            close_old_connections()
