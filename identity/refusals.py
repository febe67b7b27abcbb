"""Why a login was refused, when it was not simply a wrong password.

Authentication backends cannot return a reason, so they leave one on the request; the login
forms show it instead of "wrong password", and the failed-login receiver does not count it
against the account (a directory outage must not lock everybody out).
"""

import math
from dataclasses import dataclass

from django.utils import timezone

LOCKED = "locked"
DIRECTORY_UNAVAILABLE = "directory_unavailable"
NOT_ENTITLED = "not_entitled"
INACTIVE = "inactive"
_PRIORITY = [LOCKED, DIRECTORY_UNAVAILABLE, NOT_ENTITLED, INACTIVE]
_ATTRIBUTE = "_identity_login_refusal"


@dataclass(frozen=True)
class LoginRefusal:
    code: str
    message: str


def locked(lockout) -> LoginRefusal:
    minutes = max(1, math.ceil((lockout.locked_until - timezone.now()).total_seconds() / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return LoginRefusal(LOCKED, f"Too many failed attempts; try again in {minutes} {unit}.")


def directory_unavailable() -> LoginRefusal:
    return LoginRefusal(DIRECTORY_UNAVAILABLE,
                        "The company directory is unavailable right now; try again in a few minutes.")


def not_entitled() -> LoginRefusal:
    return LoginRefusal(NOT_ENTITLED, "Your account has no access to any desktop. Ask your administrator for access.")


def inactive() -> LoginRefusal:
    return LoginRefusal(INACTIVE, "This account is inactive.")


def refuse(request, refusal: LoginRefusal) -> None:
    if request is None:
        return
    current = getattr(request, _ATTRIBUTE, None)
    if current is None or _PRIORITY.index(refusal.code) < _PRIORITY.index(current.code):
        setattr(request, _ATTRIBUTE, refusal)


def refusal_of(request) -> LoginRefusal | None:
    return getattr(request, _ATTRIBUTE, None) if request is not None else None
