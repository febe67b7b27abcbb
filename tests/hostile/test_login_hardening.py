"""The login: a new session key at login (no fixation), redirects only within the portal
whatever `next=` says, and cookies a script or another site cannot use."""

import re
from urllib.parse import urlsplit

import pytest
from django.conf import global_settings, settings
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from hypothesis import example, given
from hypothesis import strategies as st

from tests.hostile.support import hostile
from tests.hostile.test_environment_settings import load

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-9"
EVIL = ["https://evil.example/", "//evil.example", "/\\evil.example", "\\\\evil.example", "javascript:alert(1)",
        "http:evil.example", "https:/evil.example", " //evil.example", "\t//evil.example", "/%2F%2Fevil.example",
        "///evil.example", "http://testserver@evil.example/", "data:text/html,<script>", "JaVaScRiPt:alert(1)",
        "\x00//evil.example", "http://evil.example\\@testserver/"]


@pytest.fixture
def quick_hashing(settings):
    """Hashing is not what these tests are about: a cheap hasher keeps 50 logins under a second."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(quick_hashing, django_user_model):
    return django_user_model.objects.create_user("alice-login", password=PASSWORD)


OWN_HOSTS = ("", "testserver")  # the test client's own host is the portal's


def is_local(location: str) -> bool:
    """Where a browser would go stays on this site: read as a browser reads it (tabs and newlines
    dropped, leading blanks and controls stripped, a backslash taken for a slash), it has no
    scheme and no host; a relative path ("evil.example") stays on the portal."""
    cleaned = re.sub(r"[\t\n\r]", "", location).lstrip("".join(map(chr, range(33)))).replace("\\", "/")
    if cleaned.startswith("//"):  # a browser skips every slash after the first two: a host follows
        return re.split(r"[/?#]", cleaned.lstrip("/"), maxsplit=1)[0] in OWN_HOSTS
    parts = urlsplit(cleaned)
    return parts.scheme in ("", "http", "https") and parts.netloc in OWN_HOSTS


def test_login_gives_a_new_session_key_and_ends_the_old_one(client, alice):
    session = client.session
    session["planted"] = "by an attacker who knows this key"
    session.save()
    planted_key = session.session_key
    client.cookies[settings.SESSION_COOKIE_NAME] = planted_key

    response = client.post("/login/", {"username": "alice-login", "password": PASSWORD})

    assert response.status_code == 302
    new_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert new_key != planted_key
    assert not SessionStore().exists(planted_key)
    assert client.get("/").status_code == 200  # logged in under the new key
    fixed = Client()
    fixed.cookies[settings.SESSION_COOKIE_NAME] = planted_key
    assert fixed.get("/").status_code == 302  # the planted key logs nobody in


next_values = st.one_of(st.sampled_from(EVIL), st.builds(
    lambda a, b, c: a + b + c,
    st.sampled_from(["", "/", "//", "\\", "/\\", "http:", "https://", "javascript:", " ", "\t", "%2F", "%5C"]),
    st.sampled_from(["", "evil.example", "testserver", "@evil.example", "127.0.0.1"]),
    st.sampled_from(["", "/", "/desktops/1/", "?x=//evil.example", "#//evil"])))


@hostile(max_examples=40)
@given(next_url=next_values)
@example(next_url="/desktops/1/")  # a local one is followed
def test_a_login_redirects_only_within_the_portal(client, alice, next_url):
    response = client.post("/login/", {"username": "alice-login", "password": PASSWORD, "next": next_url})
    assert response.status_code == 302
    assert is_local(response["Location"]), (next_url, response["Location"])
    if next_url == "/desktops/1/":
        assert response["Location"] == "/desktops/1/"
    client.logout()


@hostile(max_examples=40)
@given(next_url=next_values)
def test_an_already_logged_in_user_and_the_logout_and_admin_login_redirect_only_within(client, alice, next_url):
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    response = client.get("/login/", {"next": next_url})  # redirect_authenticated_user
    assert response.status_code == 302 and is_local(response["Location"]), (next_url, response["Location"])
    response = client.post("/logout/", {"next": next_url})
    assert response.status_code == 302 and is_local(response["Location"]), (next_url, response["Location"])


def test_the_admin_login_keeps_next_local(client, quick_hashing, django_user_model):
    django_user_model.objects.create_superuser("root-login", password=PASSWORD)
    for next_url in EVIL:
        response = client.post(f"/admin/login/?next={next_url}", {"username": "root-login", "password": PASSWORD,
                                                                   "next": next_url})
        assert response.status_code == 302 and is_local(response["Location"]), (next_url, response["Location"])
        client.logout()


def test_behind_https_the_cookies_are_secure_httponly_and_same_site(client, alice, settings):
    https = load("config.settings", {"VDI_HTTPS": "1"})
    assert https.SESSION_COOKIE_SECURE and https.CSRF_COOKIE_SECURE
    for name in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY",
                 "SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SAMESITE"):
        setattr(settings, name, getattr(https, name, getattr(global_settings, name)))

    client.get("/login/")
    response = client.post("/login/", {"username": "alice-login", "password": PASSWORD}, secure=True)

    session_cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session_cookie["secure"] and session_cookie["httponly"]
    assert session_cookie["samesite"] in ("Lax", "Strict")
    csrf_cookie = response.cookies.get(settings.CSRF_COOKIE_NAME) or client.cookies[settings.CSRF_COOKIE_NAME]
    assert csrf_cookie["secure"] and csrf_cookie["samesite"] in ("Lax", "Strict")


def test_without_https_the_session_cookie_is_still_httponly_and_same_site(client, alice):
    response = client.post("/login/", {"username": "alice-login", "password": PASSWORD})
    session_cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session_cookie["httponly"] and session_cookie["samesite"] in ("Lax", "Strict")
