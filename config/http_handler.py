"""Django's ASGI handler, with each request's middleware and view run in one trip to the
request thread instead of three.

Django under ASGI builds its middleware chain for async callers. Ours is sync (WhiteNoise and
two of our own middlewares only have a sync form; Django's MiddlewareMixin ones, run async,
would take two thread trips each), so a request went to the sync thread for the chain, back to
the event loop for the one async-capable middleware at its end (django-structlog's), and to
the sync thread again for the view. Here the chain is built for sync callers, as under WSGI,
and the event loop hands the whole of it to the sync thread once. Everything else is Django's
ASGIHandler: reading the body, the request signals, the disconnect watch, sending the
response. Under bench/logon_storm.py's storm this is the same work with fewer switches
between the loop and the thread (each a wake-up of the other thread and a hand-over of the
GIL).
"""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class OneTripASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        # BaseHandler.get_response: the sync chain, its resource closers and error logging.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
