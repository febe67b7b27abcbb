"""A pool that requires MFA: the portal sends a user without a verified second factor to enrol
(or verify) instead of launching, and the server refuses the launch and the console ticket
itself, whatever the page does."""

import os

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from broker.models import Desktop, Entitlement, GoldenImage, Host, Pool
from tests.mfa.pages import base_url, csrf_token, fresh_totp, log_out, type_code, type_password
from tests.support.browser import browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def secure_pool(django_user_model):
    """A pool requiring MFA whose image has no version yet: a launch that gets past the MFA check
    is refused for that reason instead (so no VM is needed to tell the two apart)."""
    image = GoldenImage.objects.create(name="unpublished", display_name="Unpublished")
    pool = Pool.objects.create(name="secure", display_name="Finance desktop", image=image, requires_mfa=True)
    user = django_user_model.objects.create_user("finn", password="finn-Pass-96")
    Entitlement.objects.create(pool=pool, user=user)
    return pool


def test_a_launch_without_a_second_factor_is_sent_to_enrol_and_refused_by_the_server(
        live_stack, browser, secure_pool):
    base = base_url(live_stack)
    page = browser.new_page()
    type_password(page, base, "finn", "finn-Pass-96")
    assert "Requires a second factor" in page.content()

    page.click("button.launch")
    page.wait_for_load_state()
    assert "/account/" in page.url and "requires a second factor" in page.content()
    assert not Desktop.objects.filter(pool=secure_pool).exists()

    # The server, not the page: a POST straight to the launch endpoint launches nothing.
    token = csrf_token(page)
    direct = page.request.post(f"{base}/pools/{secure_pool.pk}/launch/", form={"csrfmiddlewaretoken": token},
                               headers={"Referer": f"{base}/"}, max_redirects=0)
    assert direct.status == 302 and direct.headers["location"].startswith("/account/")
    assert not Desktop.objects.filter(pool=secure_pool).exists()

    # A desktop of the pool (made earlier, say, before the pool required MFA): no console ticket.
    host = Host.objects.create(name="mfa-host", libvirt_uri="test:///default", domain_type="qemu")
    desktop = Desktop.objects.create(pool=secure_pool, user=secure_pool.entitlements.get().user, host=host,
                                     name="vditest-mfa")
    ticket = page.request.post(f"{base}/desktops/{desktop.pk}/console-ticket/",
                               headers={"X-CSRFToken": token, "Referer": f"{base}/desktops/{desktop.pk}/"})
    assert ticket.status == 403 and ticket.json()["code"] == "mfa_required"


def test_after_verifying_a_second_factor_the_launch_goes_ahead(live_stack, browser, secure_pool):
    user = secure_pool.entitlements.get().user
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    base = base_url(live_stack)
    page = browser.new_page()
    type_password(page, base, "finn", "finn-Pass-96")
    type_code(page, fresh_totp(device))

    page.click("button.launch")
    page.wait_for_load_state()
    # Past the MFA check: refused only because the image has no version (the next check in line).
    assert page.url == f"{base}/" and "has no published version yet" in page.content()


def test_a_session_from_before_the_enrolment_is_sent_to_verify(live_stack, browser, secure_pool):
    """Logged in with the password alone (no factor then); a factor added since, from another
    browser: the launch asks for that factor, not for a new enrolment."""
    user = secure_pool.entitlements.get().user
    base = base_url(live_stack)
    page = browser.new_page()
    type_password(page, base, "finn", "finn-Pass-96")
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)

    page.click("button.launch")
    page.wait_for_load_state()
    assert "/login/verify/" in page.url
    type_code(page, fresh_totp(device))
    assert page.url == f"{base}/"
    page.click("button.launch")
    page.wait_for_load_state()
    assert "has no published version yet" in page.content()
    log_out(page, base)
