"""A passkey in Chromium's virtual authenticator (DevTools WebAuthn domain): registered from the
account page, then used as the second step of the next login."""

import os

import pytest

from identity.models import AuditEvent, LoginFailure, PasskeyDevice
from tests.mfa.pages import add_virtual_authenticator, base_url, csrf_token, log_out, type_password
from tests.support.browser import browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_a_passkey_is_registered_and_then_logs_the_user_in(live_stack, browser, django_user_model):
    django_user_model.objects.create_user("pia", password="pia-Pass-63")
    base = base_url(live_stack)
    page = browser.new_page()
    cdp, authenticator = add_virtual_authenticator(page)

    type_password(page, base, "pia", "pia-Pass-63")
    page.goto(f"{base}/account/")
    page.fill("#passkey-register input[name=name]", "Laptop")
    page.click("#add-passkey")
    page.wait_for_selector("text=Passkey “Laptop” added.")
    device = PasskeyDevice.objects.get(user__username="pia")
    assert device.name == "Laptop" and device.public_key
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(credentials) == 1  # the authenticator holds the private key; the server only the public one

    log_out(page, base)
    type_password(page, base, "pia", "pia-Pass-63")
    assert "/login/verify/" in page.url
    page.click("button[data-passkey=authenticate]")
    page.wait_for_selector("text=My desktops")
    assert page.url == f"{base}/"
    device.refresh_from_db()
    assert device.last_used_at is not None
    verified = AuditEvent.objects.filter(username="pia", kind=AuditEvent.Kind.MFA_VERIFIED).first()
    assert verified is not None and verified.target == "passkey"

    # Removing it asks for a current factor: the passkey itself answers.
    page.goto(f"{base}/account/")
    page.click("[data-factor=passkey] button[data-passkey=authenticate]")
    page.wait_for_selector("text=Removed.")
    assert not PasskeyDevice.objects.filter(user__username="pia").exists()
    assert AuditEvent.objects.filter(username="pia", kind=AuditEvent.Kind.MFA_REMOVED, target="passkey Laptop").exists()


def test_a_replayed_passkey_answer_is_refused_and_counted(live_stack, browser, django_user_model):
    """An answer the browser sent once (as someone watching the traffic would keep it) does not
    pass a later second step: its challenge was for that login only."""
    django_user_model.objects.create_user("quin", password="quin-Pass-74")
    base = base_url(live_stack)
    page = browser.new_page()
    add_virtual_authenticator(page)
    type_password(page, base, "quin", "quin-Pass-74")
    page.goto(f"{base}/account/")
    page.click("#add-passkey")
    page.wait_for_selector("text=added.")
    log_out(page, base)
    sent = []
    page.on("request", lambda request: sent.append(request.post_data_json)
            if request.method == "POST" and request.url.endswith("/login/verify/") else None)
    type_password(page, base, "quin", "quin-Pass-74")
    page.click("button[data-passkey=authenticate]")
    page.wait_for_selector("text=My desktops")
    answer = sent[-1]["passkey_response"]
    log_out(page, base)

    type_password(page, base, "quin", "quin-Pass-74")
    token = csrf_token(page)
    page.request.post(f"{base}/login/verify/passkey/", headers={"X-CSRFToken": token, "Referer": f"{base}/"})
    replay = page.request.post(f"{base}/login/verify/", headers={"Referer": f"{base}/login/verify/"},
                               form={"csrfmiddlewaretoken": token, "passkey_response": answer})
    assert replay.status == 400 and "That did not work" in replay.text()
    page.goto(f"{base}/")
    assert "/login/" in page.url  # nobody logged in
    assert LoginFailure.objects.filter(username="quin").count() == 1
    assert AuditEvent.objects.filter(username="quin", kind=AuditEvent.Kind.MFA_FAILED).exists()
