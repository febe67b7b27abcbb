"""Scripts authenticate with a token (manage.py create_api_token USER prints it once); the
browser with the admin's login session, and then its writes need the CSRF token."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from tests.support.mfa import verified_session


def make_token(username, *args):
    out = StringIO()
    call_command("create_api_token", username, *args, stdout=out)
    return out.getvalue().strip()


def test_create_api_token_prints_a_token_that_authenticates(site, django_user_model):
    django_user_model.objects.create_superuser("script", password="script-pass-1")
    key = make_token("script")
    assert Token.objects.get(user__username="script").key == key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/desktops/").status_code == 200


def test_a_second_token_needs_replace_and_ends_the_old_one(site, django_user_model):
    django_user_model.objects.create_superuser("script", password="script-pass-1")
    old = make_token("script")
    with pytest.raises(CommandError, match="--replace"):
        make_token("script")
    new = make_token("script", "--replace")
    assert new != old
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert client.get("/api/v1/desktops/").status_code == 401


def test_an_unknown_user_gets_no_token(db):
    with pytest.raises(CommandError, match="no user"):
        make_token("ghost")


def test_it_rejects_a_bad_token(site):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get("/api/v1/pools/").status_code == 401


def test_a_token_of_a_deactivated_user_stops_working(clients):
    client = clients["superuser"]
    client.user.is_active = False
    client.user.save(update_fields=["is_active"])
    assert client.get("/api/v1/pools/").status_code == 401


def test_the_browser_uses_its_login_session_and_needs_csrf_to_write(site, django_user_model):
    a, _ = site
    root = django_user_model.objects.create_superuser("browser", password="browser-pass-1")
    client = APIClient(enforce_csrf_checks=True)
    verified_session(client, root)  # staff: a second factor, as in production (tests/support/mfa.py)
    assert client.get("/api/v1/desktops/", HTTP_ACCEPT="text/html").status_code == 200  # browsable API
    assert client.post(f"/api/v1/hosts/{a.host.pk}/drain/", {}, format="json").status_code == 403  # no CSRF
