"""The back-channel logout endpoint refuses every logout token that is not the provider's, for
this portal, fresh, first used, a logout event without a nonce, naming a session or a user; and
a good one ends the named portal session. Tokens are signed with the real provider's key (the
test holds it) and checked by the live portal against the provider's published keys."""

import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import Group

from broker.models import Entitlement
from identity.models import AuditEvent, OidcLoginSession
from tests.sso.conftest import sign_in_at_provider
from tests.support.browser import browser  # noqa: F401
from tests.support.oidc import OTHER_CLIENT_ID

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def post_logout_token(stack, token: str) -> requests.Response:
    return requests.post(f"{stack.base_url}/oidc/backchannel-logout/", data={"logout_token": token}, timeout=10)


@pytest.fixture
def grace_signed_in(sso_stack, oidc_provider, browser, pool):
    Entitlement.objects.create(pool=pool, group=Group.objects.create(name="Employees"))
    oidc_provider.set_account("sub-grace-1", username="grace", groups=["Employees"])
    page = browser.new_page()
    sign_in_at_provider(page, sso_stack, "sub-grace-1")
    return page, OidcLoginSession.objects.get(user__username="grace")


def test_logout_tokens_that_do_not_fit_are_refused_and_a_good_one_ends_the_session(sso_stack, oidc_provider,
                                                                                    grace_signed_in):
    page, login = grace_signed_in
    assert login.sid
    now = int(time.time())
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "for another client": oidc_provider.sign(oidc_provider.logout_token(sid=login.sid, aud=OTHER_CLIENT_ID)),
        "from another issuer": oidc_provider.sign(oidc_provider.logout_token(sid=login.sid, iss="http://127.0.0.1:1")),
        "expired": oidc_provider.sign(oidc_provider.logout_token(sid=login.sid, iat=now - 4000, exp=now - 3600)),
        "with a nonce": oidc_provider.sign(oidc_provider.logout_token(sid=login.sid, nonce="n")),
        "without the event": oidc_provider.sign(oidc_provider.logout_token(sid=login.sid, events={})),
        "without jti": oidc_provider.sign(oidc_provider.logout_token(sid=login.sid, jti=None)),
        "naming nobody": oidc_provider.sign(oidc_provider.logout_token()),
        "forged": oidc_provider.sign(oidc_provider.logout_token(sid=login.sid), key=forger),
        "not a token": "not-a-token",
    }
    for what, token in bad.items():
        response = post_logout_token(sso_stack, token)
        assert response.status_code == 400, what
        assert response.text.startswith("logout token refused:"), what
        assert OidcLoginSession.objects.filter(pk=login.pk).exists(), what
    page.reload()
    assert page.locator("text=My desktops").count() == 1  # still logged in

    good = oidc_provider.sign(oidc_provider.logout_token(sid=login.sid, sub="sub-grace-1"))
    response = post_logout_token(sso_stack, good)
    assert (response.status_code, response.text) == (200, "1 session(s) ended")
    assert not OidcLoginSession.objects.filter(pk=login.pk).exists()
    page.reload()
    assert "/login/" in page.url
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SSO_LOGOUT, username="grace").count() == 1

    replayed = post_logout_token(sso_stack, good)
    assert (replayed.status_code, replayed.text) == (400, "logout token refused: it was used already (jti)")
