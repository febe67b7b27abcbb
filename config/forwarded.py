"""What a reverse proxy may tell us, believed only from the proxies in VDI_FORWARDED_ALLOW_IPS.

- X-Forwarded-For / X-Forwarded-Proto: the browser's address and scheme (uvicorn's own
  ProxyHeadersMiddleware reads them; the login throttle and the audit log count that address).
- X-Request-ID: the proxy's id for the request (nginx's $request_id), which the portal's log
  lines, the Celery tasks it starts and the response's X-Request-ID header then carry
  (config/logs.py). From anyone else it is dropped, and a fresh id is made: a client must not
  be able to pick the id under which its requests are logged, or splice itself into another's.

This wraps the ASGI application itself (config/asgi.py, config/gateway_asgi.py) rather than
being uvicorn's --proxy-headers, because the decision needs the address of the peer that sent
the request, which uvicorn's middleware overwrites with the forwarded one; config/serve.py
therefore always turns uvicorn's own off. Unset or empty: nobody's headers, not even
127.0.0.1's (anyone on the host could then pick the address the login throttle sees).
"""

import os
import re

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

# What we accept as a request id: nginx's $request_id (32 hex digits), a UUID, or any short
# token of that kind; anything else (spaces, quotes, kilobytes) is dropped and a new one made.
REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def trusted_proxies() -> str:
    return os.environ.get("VDI_FORWARDED_ALLOW_IPS", "").strip()


def behind_trusted_proxies(app, trusted: str | None = None):
    """`app` with X-Forwarded-* and X-Request-ID believed from `trusted` (default: the
    environment's VDI_FORWARDED_ALLOW_IPS) only."""
    trusted = trusted_proxies() if trusted is None else trusted
    forwarded = ProxyHeadersMiddleware(app, trusted_hosts=trusted) if trusted else None

    async def asgi(scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await app(scope, receive, send)
        peer = (scope.get("client") or (None,))[0]
        from_proxy = forwarded is not None and peer is not None and peer in forwarded.trusted_hosts
        headers = [(name, value) for name, value in scope["headers"]
                   if name != b"x-request-id" or (from_proxy and REQUEST_ID.fullmatch(value))]
        if len(headers) != len(scope["headers"]):
            scope = {**scope, "headers": headers}
        if from_proxy:
            return await forwarded(scope, receive, send)
        return await app(scope, receive, send)

    asgi.__wrapped__ = app  # what it serves, for whoever lists the routes (tests/hostile)
    return asgi
