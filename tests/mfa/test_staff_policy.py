"""Staff always need a second factor: the admin and the API (with a session) refuse a staff login
without one, a staff user without any device is sent to enrol first, and API tokens (scripts)
are not affected."""

import json
import os
from urllib.request import Request, urlopen

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token

from tests.mfa.pages import base_url, fresh_totp, type_code, type_password
from tests.support.browser import browser  # noqa: F401
from tests.support.mfa import totp_code_from_base32

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_a_staff_user_without_a_device_is_sent_to_enrol_and_the_admin_stays_closed(
        live_stack, browser, django_user_model):
    admin = django_user_model.objects.create_superuser("boss", password="boss-Pass-17")
    base = base_url(live_stack)
    page = browser.new_page()
    type_password(page, base, "boss", "boss-Pass-17", path="/admin/")
    assert "/account/" in page.url and "Administrators must use a second factor" in page.content()
    for path in ("/admin/", "/admin/broker/pool/", "/"):
        page.goto(f"{base}{path}")
        assert "/account/" in page.url, path
    session_api = page.request.get(f"{base}/api/v1/pools/")
    assert session_api.status in (401, 403) and "second factor" in session_api.text()

    token = Token.objects.create(user=admin)
    with urlopen(Request(f"{base}/api/v1/pools/", headers={"Authorization": f"Token {token.key}"})) as scripted:
        assert scripted.status == 200 and "results" in json.loads(scripted.read())

    # Enrolling opens the admin.
    page.goto(f"{base}/account/")
    page.click("#add-authenticator")
    secret = page.inner_text("#totp-secret").strip()
    page.fill("#authenticator-confirm input[name=code]", totp_code_from_base32(secret))
    page.click("#authenticator-confirm button")
    page.wait_for_load_state()
    page.goto(f"{base}/admin/")
    assert page.url == f"{base}/admin/" and "VDI broker administration" in page.content()
    assert page.request.get(f"{base}/api/v1/pools/").status == 200


def test_the_admin_refuses_a_staff_login_until_the_second_step(live_stack, browser, django_user_model):
    admin = django_user_model.objects.create_superuser("chief", password="chief-Pass-28")
    device = TOTPDevice.objects.create(user=admin, name="phone", confirmed=True)
    base = base_url(live_stack)
    page = browser.new_page()
    page.goto(f"{base}/admin/")
    assert "/login/" in page.url and "next=/admin/" in page.url  # the portal's login, for the admin too
    page.fill("input[name=username]", "chief")
    page.fill("input[name=password]", "chief-Pass-28")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/login/verify/" in page.url

    page.goto(f"{base}/admin/")  # the password alone opens nothing
    assert "VDI broker administration" not in page.content() and "/login/" in page.url
    assert page.request.get(f"{base}/api/v1/pools/").status in (401, 403)

    page.fill("input[name=username]", "chief")
    page.fill("input[name=password]", "chief-Pass-28")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    type_code(page, fresh_totp(device))
    assert page.url == f"{base}/admin/" and "VDI broker administration" in page.content()
