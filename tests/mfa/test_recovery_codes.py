"""Recovery codes: made on the account page (shown once), each working once and never again."""

import os

import pytest
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from identity.models import AuditEvent
from tests.mfa.pages import base_url, fresh_totp, log_out, type_code, type_password
from tests.support.browser import browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_a_recovery_code_works_once_and_never_again(live_stack, browser, django_user_model):
    user = django_user_model.objects.create_user("rosa", password="rosa-Pass-85")
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    base = base_url(live_stack)
    page = browser.new_page()
    type_password(page, base, "rosa", "rosa-Pass-85")
    type_code(page, fresh_totp(device))
    page.goto(f"{base}/account/")
    page.click("#new-recovery-codes")
    codes = [c.strip() for c in page.locator("#recovery-codes code").all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10
    page.goto(f"{base}/account/")
    assert "10 unused recovery codes" in page.content()
    assert not any(code in page.content() for code in codes)  # shown once, never again

    log_out(page, base)
    type_password(page, base, "rosa", "rosa-Pass-85")
    type_code(page, codes[3].upper())  # as typed from paper
    assert page.url == f"{base}/" and "My desktops" in page.content()
    used = AuditEvent.objects.get(username="rosa", kind=AuditEvent.Kind.RECOVERY_CODE_USED)
    assert "9 recovery codes left" in used.message
    assert not StaticToken.objects.filter(token=codes[3]).exists()

    log_out(page, base)
    type_password(page, base, "rosa", "rosa-Pass-85")
    type_code(page, codes[3])
    assert "/login/verify/" in page.url and "That did not work" in page.content()
    page.goto(f"{base}/")
    assert "/login/" in page.url
    assert AuditEvent.objects.filter(username="rosa", kind=AuditEvent.Kind.MFA_FAILED).count() == 1
    assert StaticToken.objects.filter(device__user=user).count() == 9
