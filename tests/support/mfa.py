"""Logging staff into the admin and the API as production requires: with a verified second
factor. A real TOTP device is made for the user and the session is marked verified with it,
exactly as the portal's second step does (django_otp's session key), so the policy
(identity/mfa/policy.py) is not weakened for the tests."""

import hmac
import struct
import time
from hashlib import sha1


def verified_session(client, user, *, backend="django.contrib.auth.backends.ModelBackend"):
    """force_login + a confirmed authenticator app whose verification the session remembers."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or TOTPDevice.objects.create(
        user=user, name="Test authenticator", confirmed=True)
    client.force_login(user, backend=backend)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device


def totp_code(key_hex: str, *, at: float | None = None, step: int = 30, digits: int = 6, offset: int = 0) -> str:
    """RFC 6238 computed here, independently of django-otp (what a phone app does)."""
    counter = int((time.time() if at is None else at) // step) + offset
    digest = hmac.new(bytes.fromhex(key_hex), struct.pack(">Q", counter), sha1).digest()
    start = digest[-1] & 0x0F
    value = (struct.unpack(">I", digest[start:start + 4])[0] & 0x7FFFFFFF) % (10 ** digits)
    return str(value).zfill(digits)


def totp_code_from_base32(secret: str, **kwargs) -> str:
    from base64 import b32decode

    padded = secret + "=" * (-len(secret) % 8)
    return totp_code(b32decode(padded).hex(), **kwargs)


def fresh_totp(device) -> str:
    """A code the device has not accepted yet: django-otp refuses a time step twice (replay), and
    accepts one step ahead (drift), so the next step's code works when this one was just used."""
    device.refresh_from_db()
    now = int(time.time() // device.step)
    offset = 1 if device.last_t is not None and device.last_t >= now else 0
    return totp_code(device.key, offset=offset)


def log_in_staff_in_browser(page, base_url: str, user, password: str, *, next_path: str = "/admin/") -> None:
    """The whole login a staff member does in the browser: the portal's password step, then the
    second step with a code of their authenticator app (made here if they have none)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or TOTPDevice.objects.create(
        user=user, name="Test authenticator", confirmed=True)
    page.goto(f"{base_url}/login/?next={next_path}")
    page.fill("input[name=username]", user.get_username())
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    page.fill("#code-form input[name=code]", fresh_totp(device))
    page.click("#code-form button[type=submit]")
    page.wait_for_load_state()
