"""An authenticator app in Chromium: enrolment from the account page with the QR code's key,
login with codes the test computes (RFC 6238), and wrong codes counted by the login throttle."""

import os
import time

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from identity.models import AuditEvent, LoginFailure, LoginLockout
from tests.mfa.pages import base_url, fresh_totp, log_out, type_code, type_password
from tests.support.browser import browser  # noqa: F401
from tests.support.mfa import totp_code, totp_code_from_base32

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
Kind = AuditEvent.Kind


def test_a_user_enrols_an_authenticator_app_and_logs_in_with_its_codes(live_stack, browser, django_user_model):
    django_user_model.objects.create_user("tess", password="tess-Pass-41")
    base = base_url(live_stack)
    page = browser.new_page()

    type_password(page, base, "tess", "tess-Pass-41")
    assert page.url == f"{base}/"  # no factor yet: the password is enough
    page.click("text=Account security")
    page.click("#add-authenticator")
    assert page.locator(".qr svg").count() == 1  # the QR code, drawn by the server
    secret = page.inner_text("#totp-secret").strip()
    page.fill("input[name=code]", "000000" if totp_code_from_base32(secret) != "000000" else "111111")
    page.click("#authenticator-confirm button")
    assert "does not match" in page.content()  # a wrong code enrols nothing
    assert not TOTPDevice.objects.filter(user__username="tess", confirmed=True).exists()
    time.sleep(2.5)  # django-otp's own throttle: a second wrong-or-right code waits 1 s after a wrong one
    page.fill("input[name=code]", totp_code_from_base32(secret))
    page.click("#authenticator-confirm button")
    page.wait_for_load_state()
    assert "authenticator app is set up" in page.content()
    device = TOTPDevice.objects.get(user__username="tess", confirmed=True)

    log_out(page, base)
    type_password(page, base, "tess", "tess-Pass-41")
    assert "/login/verify/" in page.url and "Confirm it is you" in page.content()
    page.goto(f"{base}/")  # the password alone logged nobody in
    assert "/login/" in page.url and "Log in" in page.content()
    type_password(page, base, "tess", "tess-Pass-41")
    type_code(page, fresh_totp(device))
    assert page.url == f"{base}/" and "My desktops" in page.content()

    kinds = list(AuditEvent.objects.filter(username="tess").values_list("kind", flat=True))
    assert Kind.MFA_ENROLLED in kinds and Kind.MFA_VERIFIED in kinds


def test_wrong_passwords_and_wrong_codes_add_up_to_a_lockout(live_stack, browser, django_user_model):
    """Two wrong passwords, then three wrong codes: five failures of one account, locked out;
    the right code is refused afterwards too."""
    user = django_user_model.objects.create_user("gina", password="gina-Pass-52")
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    base = base_url(live_stack)
    page = browser.new_page()
    right = totp_code(device.key)
    wrong = str((int(right) + 500000) % 1000000).zfill(6)

    for _ in range(2):
        type_password(page, base, "gina", "not-her-password")
        assert "/login/verify/" not in page.url
    type_password(page, base, "gina", "gina-Pass-52")
    for _ in range(3):
        type_code(page, wrong)
        assert "That did not work" in page.content() or "Too many failed attempts" in page.content()

    assert LoginFailure.objects.filter(username="gina").count() == 5
    assert LoginLockout.objects.filter(key="gina", cleared_at__isnull=True).exists()
    assert AuditEvent.objects.filter(username="gina", kind=Kind.MFA_FAILED).count() == 3
    type_code(page, fresh_totp(device))
    assert "Too many failed attempts" in page.content()
    assert "/login/verify/" in page.url
    page.goto(f"{base}/")
    assert "/login/" in page.url  # still nobody logged in
