"""The portal's origin serves only what its pages need, under headers that forbid framing and
caching, refuses unknown websockets cleanly and rations console tickets."""

import asyncio

import pytest
from django.urls import reverse
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from broker.console.tickets import issue_console_ticket
from broker.models import ConsoleTicket


@pytest.fixture
def logged_in(client, employee):
    client.force_login(employee)
    return client


@pytest.mark.parametrize("path", ["vendor/spice-html5/spice_auto.html", "vendor/spice-html5/spice.html",
                                  "vendor/novnc/package.json", "vendor/spice-html5/package.json"])
def test_the_packages_demo_pages_are_not_served(client, path):
    assert client.get(f"/static/{path}").status_code == 404


@pytest.mark.parametrize("path", ["vendor/novnc/core/rfb.js", "vendor/novnc/vendor/pako/lib/zlib/inflate.js",
                                  "vendor/spice-html5/src/main.js", "vendor/spice-html5/src/inputs.js",
                                  "portal/console.js"])
def test_what_the_console_page_imports_is_served_and_cannot_be_framed(client, path):
    response = client.get(f"/static/{path}")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


def test_pages_carry_a_content_security_policy(client):
    policy = client.get(reverse("portal:login"))["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert "connect-src 'self' ws://testserver" in policy


def test_the_policy_lets_consoles_reach_a_separate_gateway(client, settings):
    settings.VDI_CONSOLE_GATEWAY_URL = "wss://console.example.com"
    assert "connect-src 'self' ws://testserver wss://console.example.com;" in client.get(
        reverse("portal:login"))["Content-Security-Policy"]


def test_a_logged_in_users_pages_are_not_stored(logged_in):
    assert logged_in.get(reverse("portal:home"))["Cache-Control"] == "no-store"


@pytest.mark.django_db(transaction=True)
def test_an_unknown_websocket_path_is_refused_without_an_error(live_stack):
    async def attempt():
        async with connect(f"ws://127.0.0.1:{live_stack.port}/ws/nothing-here/", origin=live_stack.base_url,
                           open_timeout=10):
            pass

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(attempt())
    assert refused.value.response.status_code == 404
    assert "No route found" not in (live_stack.log_dir / "portal.log").read_text(errors="replace")


def test_console_tickets_are_rationed_per_user(logged_in, employee, echo_desktop, settings):
    settings.VDI_CONSOLE_TICKETS_PER_MINUTE = 3
    for _ in range(3):
        issue_console_ticket(user=employee, session_key=logged_in.session.session_key, desktop=echo_desktop,
                             protocol="vnc", origin="http://testserver")

    response = logged_in.post(reverse("portal:console-ticket", args=[echo_desktop.pk]))

    assert response.status_code == 429
    assert response.json()["error"].startswith("Too many console connections in the last minute")
    assert ConsoleTicket.objects.count() == 3
