"""What the portal refuses on the way in, each with a page that says so (never a 500): a state it
did not issue or issued once already, a nonce that is not the sign-in's, a code issued to
another client, an authorization request without PKCE; ID tokens that are expired, forged or
for another client, checked against the real provider's keys."""

import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore

from broker.models import Entitlement
from config.oidc import oidc_settings_from_env
from identity.models import AuditEvent, OidcLoginSession
from identity.oidc import discovery
from identity.oidc.backend import OidcBackend, SsoRefusal
from tests.sso.conftest import sign_in_at_provider
from tests.support.browser import browser  # noqa: F401
from tests.support.oidc import OTHER_CLIENT_ID, PORTAL_CLIENT_ID

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
User = get_user_model()


@pytest.fixture
def frank(oidc_provider, pool):
    Entitlement.objects.create(pool=pool, group=Group.objects.create(name="Employees"))
    oidc_provider.set_account("sub-frank-1", username="frank", groups=["Employees"])
    return "sub-frank-1"


def tamper_with_the_authorization_request(page, stack, change):
    """Rewrite where the portal sends the browser at the provider's authorization endpoint (as
    an attacker between the two could): `change` gets and returns its query parameters."""
    def rewrite(route):
        response = route.fetch(max_redirects=0)
        location = urlsplit(response.headers["location"])
        query = change(dict(parse_qsl(location.query)))
        headers = {**response.headers, "location": urlunsplit(location._replace(query=urlencode(query)))}
        route.fulfill(response=response, headers=headers)

    page.route(f"{stack.base_url}/oidc/sign-in/**", rewrite)


def refusal_text(page) -> str:
    page.wait_for_selector(".sso-refused", timeout=30_000)
    return page.inner_text(".sso-refused")


def test_a_state_the_portal_did_not_issue_is_refused(sso_stack, oidc_provider, browser, frank):
    page = browser.new_page()
    tamper_with_the_authorization_request(page, sso_stack, lambda query: {**query, "state": "forged-state"})
    sign_in_at_provider(page, sso_stack, frank, next_page=None)
    assert "this sign-in was not started here" in refusal_text(page)
    assert not User.objects.filter(username="frank").exists()
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SSO_LOGIN_FAILED, message__contains="(state)").exists()


def test_a_callback_replayed_is_refused_here_and_elsewhere(sso_stack, oidc_provider, browser, frank):
    page = browser.new_page()
    callbacks = []
    page.on("request", lambda request: callbacks.append(request.url) if "/oidc/callback/" in request.url else None)
    sign_in_at_provider(page, sso_stack, frank)
    assert len(callbacks) == 1

    # The same browser again: that state was used.
    response = page.goto(callbacks[0])
    assert response.status == 400
    assert "was used already (state)" in refusal_text(page)
    # Someone else with the stolen address: no sign-in of theirs has that state.
    stolen = requests.get(callbacks[0], timeout=10, allow_redirects=False)
    assert stolen.status_code == 403 and "not started here" in stolen.text
    assert OidcLoginSession.objects.filter(user__username="frank").count() == 1
    code = dict(parse_qsl(urlsplit(callbacks[0]).query))["code"]
    assert code not in sso_stack.logs()  # the refused replays' log lines are scrubbed


def test_a_sign_in_started_too_long_ago_is_refused(sso_stack, oidc_provider, browser, frank):
    page = browser.new_page()
    page.goto(f"{sso_stack.base_url}/login/")
    page.click("text=Sign in with Test IdP")
    page.wait_for_selector("input[name=login]")
    # Eleven minutes pass at the provider's login form.
    session_key = next(c["value"] for c in browser.cookies(sso_stack.base_url) if c["name"] == "sessionid")
    session = SessionStore(session_key=session_key)
    states = session["oidc_states"]
    for entry in states.values():
        entry["added_on"] -= 660
    session["oidc_states"] = states
    session.save()

    page.fill("input[name=login]", frank)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    assert "started too long ago (state expired)" in refusal_text(page)
    assert not User.objects.filter(username="frank").exists()


def test_an_id_token_with_another_nonce_is_refused(sso_stack, oidc_provider, browser, frank):
    page = browser.new_page()
    tamper_with_the_authorization_request(page, sso_stack, lambda query: {**query, "nonce": "a-nonce-of-mine"})
    sign_in_at_provider(page, sso_stack, frank, next_page=None)
    assert refusal_text(page) == "Sign-in refused: the ID token does not answer this sign-in (nonce)."
    assert not User.objects.filter(username="frank").exists()


def test_a_code_issued_to_another_client_is_refused(sso_stack, oidc_provider, browser, frank):
    page = browser.new_page()
    tamper_with_the_authorization_request(page, sso_stack, lambda query: {**query, "client_id": OTHER_CLIENT_ID})
    sign_in_at_provider(page, sso_stack, frank, next_page=None)
    assert refusal_text(page) == "Sign-in refused: Test IdP did not accept this sign-in's code (invalid_grant)."
    assert not User.objects.filter(username="frank").exists()


def test_an_authorization_request_without_pkce_is_refused_by_the_provider(sso_stack, oidc_provider, browser, frank):
    def drop_pkce(query):
        return {name: value for name, value in query.items() if not name.startswith("code_challenge")}

    page = browser.new_page()
    tamper_with_the_authorization_request(page, sso_stack, drop_pkce)
    page.goto(f"{sso_stack.base_url}/login/")
    page.click("text=Sign in with Test IdP")
    assert refusal_text(page) == "Test IdP answered: invalid_request."


# -- ID tokens, checked by the portal's backend against the real provider's keys -------------


@pytest.fixture
def backend(oidc_provider, settings):
    for name, value in oidc_settings_from_env(oidc_provider.portal_env()).items():
        setattr(settings, name, value)
    discovery.forget_metadata()
    backend = OidcBackend()
    backend.use_provider(discovery.provider_metadata())
    yield backend
    discovery.forget_metadata()


def id_token_claims(provider, **overrides):
    now = int(time.time())
    claims = {"iss": provider.issuer, "sub": "sub-frank-1", "aud": PORTAL_CLIENT_ID, "iat": now, "exp": now + 300,
              "nonce": "the-nonce"}
    claims.update(overrides)
    return claims


def test_an_id_token_signed_by_the_provider_for_this_portal_is_accepted(oidc_provider, backend):
    token = oidc_provider.sign(id_token_claims(oidc_provider))
    assert backend.verify_token(token, nonce="the-nonce")["sub"] == "sub-frank-1"


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000}, "the ID token has expired"),
    ({"aud": OTHER_CLIENT_ID}, "the ID token was issued to another application"),
    ({"aud": [PORTAL_CLIENT_ID, OTHER_CLIENT_ID], "azp": OTHER_CLIENT_ID}, "the ID token was issued to another application"),
    ({"iss": "http://127.0.0.1:1"}, "the ID token comes from another issuer"),
    ({"nonce": "another-nonce"}, "the ID token does not answer this sign-in (nonce)"),
])
def test_an_id_token_of_the_provider_that_does_not_fit_is_refused(oidc_provider, backend, overrides, reason):
    token = oidc_provider.sign(id_token_claims(oidc_provider, **overrides))
    with pytest.raises(SsoRefusal) as refused:
        backend.verify_token(token, nonce="the-nonce")
    assert str(refused.value) == reason


def test_a_forged_id_token_is_refused(oidc_provider, backend):
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = oidc_provider.sign(id_token_claims(oidc_provider), key=forger)  # the provider's kid, not its key
    with pytest.raises(SsoRefusal, match="signature is not the provider's"):
        backend.verify_token(forged, nonce="the-nonce")
    with_the_secret = jwt.encode(id_token_claims(oidc_provider), oidc_provider.client_secret, algorithm="HS256")
    with pytest.raises(SsoRefusal, match="which this provider does not use"):
        backend.verify_token(with_the_secret, nonce="the-nonce")
    unsigned = jwt.encode(id_token_claims(oidc_provider), None, algorithm="none")
    with pytest.raises(SsoRefusal):
        backend.verify_token(unsigned, nonce="the-nonce")
