"""What the MFA browser tests do in the portal, as a person would: log in, type codes, use the
passkey button. The portal is reached as http://localhost:<port> (a secure context, and a host
name WebAuthn accepts as the relying party id; an IP address is not one)."""

import re

from tests.support.mfa import fresh_totp  # noqa: F401  (the tests import it from here)


def base_url(live_stack) -> str:
    return live_stack.base_url.replace("127.0.0.1", "localhost")


def type_password(page, base: str, username: str, password: str, *, path: str = "/login/") -> None:
    page.goto(f"{base}{path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def type_code(page, code: str) -> None:
    page.fill("#code-form input[name=code]", code)
    page.click("#code-form button[type=submit]")
    page.wait_for_load_state()


def log_out(page, base: str) -> None:
    page.goto(f"{base}/")
    if page.locator("form[action='/logout/'] button").count():
        page.click("form[action='/logout/'] button")
        page.wait_for_load_state()


def csrf_token(page) -> str:
    for cookie in page.context.cookies():
        if cookie["name"] == "csrftoken":
            return cookie["value"]
    raise AssertionError("no CSRF cookie in the browser")


def add_virtual_authenticator(page) -> tuple:
    """Chromium's virtual authenticator (DevTools WebAuthn domain): a platform passkey that
    verifies the user, as a phone or a laptop's fingerprint reader would."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
    }})
    return cdp, added["authenticatorId"]


def on_page(page, pattern: str) -> bool:
    return re.search(pattern, page.url) is not None
