"""Checking a second factor: a code (authenticator app or recovery code) or a passkey.

Failures count against the same login throttle as wrong passwords (per account and per address,
identity/services/throttling.py) and are audited; a locked account or address is refused before
any code is checked."""

import re
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef
from django_otp import devices_for_user
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from .. import refusals
from ..http import client_address_of
from ..models import AuditEvent, PasskeyDevice
from ..services import audit, throttling
from . import passkeys

Kind = AuditEvent.Kind


class SecondFactorRefused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FactorSummary:
    authenticator_apps: list
    passkeys: list
    recovery_codes_left: int

    @property
    def any(self) -> bool:
        return bool(self.authenticator_apps or self.passkeys)


def summary_of(user) -> FactorSummary:
    static = StaticDevice.objects.filter(user=user, confirmed=True).first()
    return FactorSummary(
        authenticator_apps=list(TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk")),
        passkeys=list(PasskeyDevice.objects.filter(user=user, confirmed=True).order_by("pk")),
        recovery_codes_left=static.token_set.count() if static else 0,
    )


def has_second_factor(user) -> bool:
    """An authenticator app or a passkey (recovery codes alone are not a factor one can enrol)."""
    # One round trip: it is asked at every password login.
    return get_user_model().objects.filter(pk=user.pk).filter(
        Exists(TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True))
        | Exists(PasskeyDevice.objects.filter(user=OuterRef("pk"), confirmed=True))
    ).exists()


def kind_of(device) -> str:
    if isinstance(device, PasskeyDevice):
        return "passkey"
    if isinstance(device, StaticDevice):
        return "recovery code"
    return "authenticator app"


def _normalized(code: str) -> str:
    return re.sub(r"[\s-]", "", code or "").lower()[:64]


def _match_code(user, code: str):
    for device in devices_for_user(user, confirmed=True):
        if isinstance(device, PasskeyDevice):
            continue
        if isinstance(device, TOTPDevice) and not code.isdigit():
            continue
        allowed, _ = device.verify_is_allowed()
        if allowed and device.verify_token(code):  # a recovery code is deleted as it is used
            return device
    return None


def verify(*, request, user, code: str = "", passkey_response: str = ""):
    """The device that proved this login's second factor; SecondFactorRefused otherwise."""
    username = user.get_username()
    address = client_address_of(request)
    lockout = throttling.active_lockout(username=username, address=address)
    if lockout is not None:
        refusal = refusals.locked(lockout)
        audit.record_event(kind=Kind.LOGIN_REFUSED, request=request, actor=user, message=refusal.message)
        raise SecondFactorRefused(refusal.message)
    device, reason = None, "wrong code"
    if passkey_response:
        try:
            device = passkeys.authenticate(request, user, response=passkey_response)
        except passkeys.PasskeyRefused as refused:
            reason = str(refused)
    elif _normalized(code):
        device = _match_code(user, _normalized(code))
    else:
        raise SecondFactorRefused("Type a code from your authenticator app, or use your passkey.")
    if device is None:
        _count_failure(request=request, user=user, reason=reason)
        raise SecondFactorRefused("That did not work: check the code (or the passkey) and try again.")
    if isinstance(device, StaticDevice):
        audit.record_event(kind=Kind.RECOVERY_CODE_USED, request=request, actor=user,
                           message=f"{device.token_set.count()} recovery codes left")
    return device


def _count_failure(*, request, user, reason: str) -> None:
    username = user.get_username()
    address = client_address_of(request)
    lockouts = throttling.record_failed_login(username=username, address=address)
    audit.record_event(kind=Kind.MFA_FAILED, request=request, actor=user, client_address=address, message=reason)
    for lockout in lockouts:
        audit.record_event(kind=Kind.LOCKOUT, request=request, actor=user, client_address=address,
                           target=f"{lockout.get_scope_display().lower()} {lockout.key}",
                           message=f"{lockout.failures} failed logins; locked until "
                                   f"{lockout.locked_until:%Y-%m-%d %H:%M} UTC")
