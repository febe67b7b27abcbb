"""The login behind a console websocket: the portal's session cookie, checked the way Django
checks it for a page (the session exists, its user is active, and the password has not
changed since the login), by the gateway and by the websockify plugin alike.

The gateway is a plain ASGI app outside Channels' session and auth middleware: loading the
login here lets it happen in the same database trip as the ticket check, and keeps the
middleware's wrapper out of every relayed message's send path.
"""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie


class _SessionRequest:
    """What django.contrib.auth.get_user() reads of a request: its session."""

    def __init__(self, session):
        self.session = session


def cookie_header(scope) -> str:
    """The Cookie header(s) of an ASGI websocket scope, as one string."""
    return "; ".join(value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"cookie")


def login_from_cookie_header(header: str | None):
    """(user, session key) of the login the cookie names; (AnonymousUser, None) without one."""
    key = parse_cookie(header or "").get(settings.SESSION_COOKIE_NAME)
    if not key:
        return AnonymousUser(), None
    user = get_user(_SessionRequest(import_module(settings.SESSION_ENGINE).SessionStore(key)))
    return (user, key) if user.is_authenticated else (user, None)


def login_session_exists(session_key: str) -> bool:
    return import_module(settings.SESSION_ENGINE).SessionStore().exists(session_key)


def user_of_login_session(session_key: str):
    """The user a login session still logs in, checked as Django checks a page's (the session
    auth hash: a changed password ends the login); AnonymousUser otherwise."""
    return get_user(_SessionRequest(import_module(settings.SESSION_ENGINE).SessionStore(session_key)))
