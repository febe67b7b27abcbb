"""The console gateway alone, as its own ASGI process: the proxy tier of a large deployment.

    python -m config.serve config.gateway_asgi:application --host 0.0.0.0 --port 8443

It validates the same tickets as the portal, through the same PostgreSQL (tickets, login
sessions, entitlements) and Redis (the "close this console" messages of logout and lost
entitlements), and connects only to console ports of the broker's hosts. It never imports
libvirt and needs no credentials but the database's and Redis's: give it the portal's
DATABASE_URL, CHANNEL_LAYER_URL (or REDIS_URL), DJANGO_SECRET_KEY (login sessions are signed
with it), and VDI_CONSOLE_ALLOWED_ORIGINS=<the portal's origin>; point the portal's
VDI_CONSOLE_GATEWAY_URL at it. Browsers send it the portal's session cookie only if the cookie
covers its host name (SESSION_COOKIE_DOMAIN, e.g. .example.com for console.example.com).

HTTP answers only GET /healthz (for load balancers); everything else is 404.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# No libvirt here: the console port is the broker's record of the live domain (set when it
# started, corrected at every grant), and it must equal the one the ticket's grant read live.
os.environ.setdefault("VDI_CONSOLE_TARGET_LOOKUP", "recorded")
django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from broker.console.routing import websocket_urlpatterns  # noqa: E402
from config.forwarded import behind_trusted_proxies  # noqa: E402
from config.unrouted import any_other_websocket  # noqa: E402


async def health_only(scope, receive, send):
    if scope["type"] != "http":
        return
    ok = scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD")
    body = b"ok\n" if ok else b"not found\n"
    await send({"type": "http.response.start", "status": 200 if ok else 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


application = behind_trusted_proxies(ProtocolTypeRouter(
    {
        "http": health_only,
        "websocket": URLRouter([*websocket_urlpatterns, any_other_websocket]),
    }
))
