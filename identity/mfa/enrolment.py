"""Adding and removing second factors; each change is audited."""

import segno
from django.db import transaction
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from ..models import AuditEvent
from ..services import audit
from . import passkeys
from .factors import has_second_factor, kind_of

Kind = AuditEvent.Kind
RECOVERY_CODES = 10


class EnrolmentRefused(Exception):
    pass


def start_authenticator_app(*, user) -> TOTPDevice:
    """A new, unconfirmed TOTP device (the previous unconfirmed ones of the user are dropped)."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def qr_code_svg(device: TOTPDevice) -> str:
    """The otpauth:// URL as an inline SVG QR code, drawn here (no third-party service sees the key)."""
    return segno.make(device.config_url, error="m").svg_inline(scale=5, border=2)


def secret_of(device: TOTPDevice) -> str:
    """The key in base32, for typing into an app that cannot scan."""
    from base64 import b32encode

    return b32encode(device.bin_key).decode().rstrip("=")


class TryAgainLater(Exception):
    """django-otp's own throttle: each wrong code doubles the wait before the next one is checked."""


def confirm_authenticator_app(*, request, device: TOTPDevice, code: str) -> bool:
    code = "".join((code or "").split())
    allowed, _ = device.verify_is_allowed()
    if not allowed:
        raise TryAgainLater()
    if not code.isdigit() or not device.verify_token(code):
        return False
    TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
    device.confirmed = True
    audit.record_event(kind=Kind.MFA_ENROLLED, request=request, actor=device.user, target="authenticator app")
    return True


def add_passkey(*, request, user, response: str, name: str):
    device = passkeys.register(request, user, response=response, name=name)
    audit.record_event(kind=Kind.MFA_ENROLLED, request=request, actor=user, target=f"passkey {device.name}")
    return device


@transaction.atomic
def new_recovery_codes(*, request, user) -> list[str]:
    """Ten new single-use codes, replacing any old ones; returned once and stored only as used by django-otp."""
    if not has_second_factor(user):
        raise EnrolmentRefused("Add an authenticator app or a passkey first; recovery codes stand in for them.")
    device, _ = StaticDevice.objects.get_or_create(user=user, name="Recovery codes", defaults={"confirmed": True})
    StaticDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
    device.token_set.bulk_create([StaticToken(device=device, token=code) for code in codes])
    audit.record_event(kind=Kind.MFA_ENROLLED, request=request, actor=user, target="recovery codes",
                       message=f"{RECOVERY_CODES} new recovery codes (the old ones no longer work)")
    return codes


@transaction.atomic
def remove_device(*, request, user, device) -> None:
    what = kind_of(device)
    label = what if what != "passkey" else f"passkey {device.name}"
    device.delete()
    if not has_second_factor(user):
        # Recovery codes stand in for a factor; with none left they would be a factor of their own.
        StaticDevice.objects.filter(user=user).delete()
    audit.record_event(kind=Kind.MFA_REMOVED, request=request, actor=user, target=label)


@transaction.atomic
def remove_all_devices(*, user, reason: str, request=None) -> int:
    """Every factor of the user gone (an admin's break-glass for a lost phone or key)."""
    from django_otp import devices_for_user

    devices = list(devices_for_user(user, confirmed=None))
    for device in devices:
        device.delete()
    if devices:
        audit.record_event(kind=Kind.MFA_REMOVED, request=request, username=user.get_username(),
                           target="every second factor", message=reason)
    return len(devices)
