"""Broker tickets for a stock websockify, for operators who already run it as their gateway:

    DJANGO_SETTINGS_MODULE=config.settings DATABASE_URL=... DJANGO_SECRET_KEY=... \\
    VDI_CONSOLE_ALLOWED_ORIGINS=https://portal.example.com \\
    websockify --token-plugin broker.console.websockify_plugin.BrokerTickets \\
               --auth-plugin broker.console.websockify_plugin.BrokerLogin 0.0.0.0:6080

and on the portal VDI_CONSOLE_GATEWAY_KIND=websockify, VDI_CONSOLE_GATEWAY_URL=wss://<it>.

websockify asks the token plugin for the target first, with nothing but the token, then the
auth plugin with the request headers. So BrokerTickets resolves the target exactly as the
broker's gateway does (the console address of the desktop's Host row and the port resolved
now, as VDI_CONSOLE_TARGET_LOOKUP says, "recorded" unless set: tickets.console_port_now)
without consuming the ticket;
BrokerLogin then
redeems it with the same checks as the gateway (login session cookie, user, Origin, expiry,
single use, entitlement, desktop running) and refuses with HTTP 403 and the same reason.

What websockify cannot do, because it only relays bytes: answer QEMU's VNC authentication
(the page gets the one-time password and noVNC answers it; it expires with the ticket), SPICE
(one ticket, several sockets: use the broker's gateway), console limits and idle timeouts,
and closing open consoles on logout or lost entitlement (new ones are refused at once).
"""

from __future__ import annotations

import logging
import os
import threading

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A websockify tier usually runs where libvirt is out of reach, like config/gateway_asgi.py:
# the console port is the broker's record (corrected from the live domain at every grant).
os.environ.setdefault("VDI_CONSOLE_TARGET_LOOKUP", "recorded")
django.setup()

from django.db import close_old_connections  # noqa: E402
from websockify.auth_plugins import AuthenticationError  # noqa: E402
from websockify.token_plugins import BasePlugin  # noqa: E402

from config.log_filters import ScrubConsoleTickets  # noqa: E402

from . import tickets  # noqa: E402
from .close_codes import CloseCode, ConsoleRefused  # noqa: E402
from .targets import ConsoleTarget  # noqa: E402
from .login import login_from_cookie_header  # noqa: E402
from .origin import is_allowed_origin, websocket_origin  # noqa: E402

log = logging.getLogger(__name__)
# websockify logs each request's path, where the token is: scrub it like uvicorn's.
for _handler in logging.getLogger().handlers:
    _handler.addFilter(ScrubConsoleTickets())

# websockify calls lookup() then authenticate() for one request, in one thread (or process).
_request = threading.local()
# Where a refused request's target points: nothing is ever connected, authenticate() refuses.
_NOWHERE = ("127.0.0.1", 9)


class BrokerTickets(BasePlugin):
    """--token-plugin: the console target of an unused, unexpired ticket."""

    def lookup(self, token):
        _request.token = token
        close_old_connections()
        try:
            target = tickets.peek_console_target(token=token)
        finally:
            close_old_connections()
        _request.target = target
        return target or _NOWHERE


class BrokerLogin:
    """--auth-plugin: the same checks as the broker's gateway, with the request's headers."""

    def __init__(self, src=None):
        self.source = src

    def authenticate(self, headers, target_host, target_port):
        token, expected = getattr(_request, "token", None), getattr(_request, "target", None)
        _request.token = _request.target = None
        close_old_connections()
        try:
            target = self._redeem(headers, token)
        except ConsoleRefused as refused:
            log.info("console refused (websockify): code=%s reason=%s", refused.code, refused.reason)
            raise AuthenticationError(response_code=403, response_msg=f"{refused.code} {refused.reason}")
        finally:
            close_old_connections()
        if expected is None or (target.address, target.port) != (target_host, int(target_port)):
            raise AuthenticationError(response_code=403, response_msg="4404 Console ticket is missing or invalid.")
        log.info("console opened (websockify): desktop=%s user=%s", target.desktop_id, target.user_id)

    def _redeem(self, headers, token) -> ConsoleTarget:
        scope = {
            "scheme": "wss" if headers.get("X-Forwarded-Proto") == "https" else "ws",
            "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()],
        }
        if not is_allowed_origin(scope):
            raise ConsoleRefused(CloseCode.ORIGIN_REFUSED, "This page's origin may not open consoles.")
        user, session_key = login_from_cookie_header(headers.get("Cookie"))
        target = tickets.redeem_console_ticket(token=token or "", user=user, session_key=session_key,
                                               origin=websocket_origin(scope), desktop_id=None)
        if target.protocol != "vnc":
            raise ConsoleRefused(CloseCode.SPICE_CHANNEL_REFUSED, "SPICE consoles need the broker's gateway.")
        return target
