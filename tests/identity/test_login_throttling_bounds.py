"""The login throttle's exemptions have bounds: guessing from the owner's own address ends in a
lockout too, and no client picks the address the throttle counts by sending a header."""

from http.cookies import SimpleCookie
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pytest

from identity.models import LoginFailure
from tests.identity.conftest import login

LOCKED = b"Too many failed attempts; try again in 15 minutes."


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-local-Pw-1")


def test_guessing_from_the_owners_known_address_ends_in_a_lockout(client, alice, settings):
    settings.VDI_LOGIN_MAX_FAILURES_PER_ADDRESS = 1000  # a site whose staff share one NAT address
    login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="192.0.2.10")  # the owner's usual address
    client.logout()

    for _ in range(settings.VDI_LOGIN_MAX_FAILURES_AT_KNOWN_ADDRESS - 1):  # someone behind the same NAT
        assert LOCKED not in login(client, "alice", "wrong-password", REMOTE_ADDR="192.0.2.10").content
    assert LOCKED not in login(client, "alice", "wrong-password", REMOTE_ADDR="192.0.2.10").content

    assert LOCKED in login(client, "alice", "alice-local-Pw-1", REMOTE_ADDR="192.0.2.10").content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db(transaction=True)
def test_a_forwarded_for_header_does_not_change_the_address_the_throttle_counts(live_stack, alice):
    page = urlopen(f"{live_stack.base_url}/login/", timeout=10)
    cookies = SimpleCookie()
    for header in page.headers.get_all("Set-Cookie"):
        cookies.load(header)
    csrf = cookies["csrftoken"].value

    for n in range(5):
        request = Request(f"{live_stack.base_url}/login/", method="POST",
                          data=urlencode({"username": f"guess{n}", "password": "wrong"}).encode(),
                          headers={"Cookie": f"csrftoken={csrf}", "X-CSRFToken": csrf,
                                   "X-Forwarded-For": f"203.0.113.{n + 1}", "Referer": f"{live_stack.base_url}/login/"})
        try:
            urlopen(request, timeout=10).read()
        except HTTPError as refused:
            assert refused.code == 200, refused.read()[:300]

    assert set(LoginFailure.objects.values_list("client_address", flat=True)) == {"127.0.0.1"}
    assert LoginFailure.objects.count() == 5
