"""ASGI entry point: Django for HTTP, the console gateway for websockets (the gateway alone, for
a separate proxy tier, is config/gateway_asgi.py).

Serve it with `python -m config.serve config.asgi:application --host … --port …`
(config/serve.py): uvicorn with the console's websocket protocol, whose send waits while the
socket's write buffer is full (the relay's backpressure), and no per-message deflate (screen
updates are not worth compressing twice; deflate costs CPU and latency on every frame).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application()

from config.http_handler import OneTripASGIHandler  # noqa: E402

# Django's ASGI handler, each request's middleware and view in one trip to the request thread.
django_asgi_app = OneTripASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from broker.console.routing import websocket_urlpatterns as console_websockets  # noqa: E402
from config.forwarded import behind_trusted_proxies  # noqa: E402
from config.request_limits import limit_request_bodies  # noqa: E402
from config.unrouted import any_other_websocket  # noqa: E402
from portal.routing import websocket_urlpatterns as launch_progress_websockets  # noqa: E402

# Origin and login are checked inside the gateway (a plain ASGI app, broker/console/gateway.py),
# before the websocket is accepted (HTTP 403 without a login: broker/console/handshake.py);
# other refusals open it and close it, so the page gets a close code and a reason it can show.
# No session/auth middleware: the gateway loads the login with the ticket in one database trip.
application = behind_trusted_proxies(ProtocolTypeRouter(
    {
        "http": limit_request_bodies(django_asgi_app),
        "websocket": URLRouter([*console_websockets, *launch_progress_websockets, any_other_websocket]),
    }
))
