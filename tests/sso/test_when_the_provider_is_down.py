"""The identity provider down: the login page still offers the password form and says single
sign-on is unavailable; a local (break-glass) staff account logs in with its second factor; SSO
comes back by itself."""

import time

import pytest

from tests.support.browser import browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_local_accounts_log_in_while_the_provider_is_down(sso_stack, oidc_provider, browser, django_user_model):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.support.mfa import totp_code

    breakglass = django_user_model.objects.create_user("breakglass", password="a-long-Local-password-1", is_staff=True)
    device = TOTPDevice.objects.create(user=breakglass, name="phone", confirmed=True)  # staff: with MFA
    oidc_provider.stop()
    time.sleep(3)  # past the portal's discovery cache (VDI_OIDC_DISCOVERY_CACHE_SECONDS=2 in the tests)
    page = browser.new_page()
    response = page.goto(f"{sso_stack.base_url}/login/")
    assert response.status == 200
    assert "Test IdP cannot be reached right now" in page.inner_text(".sso-unavailable")
    assert page.locator("text=Sign in with Test IdP").count() == 0

    sign_in = page.request.get(f"{sso_stack.base_url}/oidc/sign-in/", max_redirects=0)
    assert sign_in.status == 503 and "Local accounts can still log in" in sign_in.text()

    page.fill("input[name=username]", "breakglass")
    page.fill("input[name=password]", "a-long-Local-password-1")
    page.click("button[type=submit]")
    page.fill("#code-form input[name=code]", totp_code(device.key))  # the second step, local too
    page.click("#code-form button[type=submit]")
    page.wait_for_selector("text=My desktops")

    # The provider back: the button returns once the failure is no longer remembered (15 s).
    oidc_provider.start()
    browser.clear_cookies()  # logged out, on the login page again
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        page.goto(f"{sso_stack.base_url}/login/")
        if page.locator("text=Sign in with Test IdP").count():
            break
        time.sleep(1)
    assert page.locator("text=Sign in with Test IdP").count() == 1
    assert page.locator(".sso-unavailable").count() == 0
