"""The login between its two steps: the password was right, the second factor is still to come.

Nobody is logged in yet: the session only remembers who typed the right password, with which
backend, where to go after, and when (the step expires; the password must then be typed again)."""

import time

from django.conf import settings
from django.contrib.auth import get_user_model

_KEY = "mfa_pending_login"


def begin(request, user, *, next_url: str) -> None:
    request.session[_KEY] = {"user": user.pk, "backend": user.backend, "next": next_url, "at": time.time()}


def pending_user(request):
    """The user who passed the password step in this session, if that was recent."""
    state = request.session.get(_KEY)
    if not state or time.time() - state.get("at", 0) > settings.VDI_MFA_STEP_SECONDS:
        return None
    user = get_user_model().objects.filter(pk=state["user"], is_active=True).first()
    if user is not None:
        user.backend = state["backend"]
    return user


def next_url(request) -> str:
    return (request.session.get(_KEY) or {}).get("next") or ""


def finish(request) -> None:
    request.session.pop(_KEY, None)
