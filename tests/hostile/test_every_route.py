"""Security, as tests over everything that exists: every URL the resolver knows, every API route
the router registered, every websocket route of the ASGI applications. A new endpoint is covered
the day it is added; one these tests cannot place (a new kind of id in a URL) fails them until
someone says what its foreign id is.

- CSRF: no state-changing request without the token, on any route (the API's token
  authentication is the documented exception: a script has no cookie to ride on).
- Another user's desktop, backup and pool ids in every portal URL, and another operator's rows
  in every API route: 403/404, none of their data, nothing changed.
- A foreign Origin, or another user's desktop, on every websocket route: never opened.
- Headers on every page: CSP with frame-ancestors, nosniff, a Referrer-Policy, no-store.
"""

import asyncio
import os

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.test import Client

from broker.console.tickets import issue_console_ticket
from broker.models import ConsoleTicket, DataDiskBackup, Desktop, DesktopState, Entitlement, Pool
from tests.hostile.enumerate import http_routes, websocket_routes
from tests.support.console_client import session_cookie
from tests.support.mfa import verified_session

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROUTES = [route for route in http_routes() if "format" not in route.kwargs]  # .json twins: the same views
PORTAL_ROUTES_WITH_IDS = [route for route in ROUTES if route.name.startswith("portal:") and route.kwargs]
NOT_STATE_CHANGING = {"healthz", "readyz", "metrics"}  # GET-only probes


@pytest.fixture
def alice_and_bob(pool, employee, other_employee, host, echo_server, image):
    """alice's running desktop; bob's running desktop with a data disk backup; a pool only bob may use."""
    from tests.support.desktops import running_desktop_on

    alices = running_desktop_on(echo_server, pool=pool, user=employee, name="vditest-alice")
    bobs = running_desktop_on(echo_server, pool=pool, user=other_employee, name="vditest-bob-secret-name",
                              data_volume_name="vditest-bob-data.qcow2")
    backup = DataDiskBackup.objects.create(desktop=bobs, host=host, storage_pool="vdi-backups",
                                           volume_name="vditest-bob-backup.qcow2", size_bytes=1,
                                           state=DataDiskBackup.State.DONE)
    bobs_pool = Pool.objects.create(name="bobs-only", display_name="Bob's only pool", image=image)
    Entitlement.objects.create(pool=bobs_pool, user=other_employee)
    return alices, bobs, backup, bobs_pool


# -- CSRF ------------------------------------------------------------------------------------------

def test_no_post_without_a_csrf_token_on_any_route(db, django_user_model):
    """Logged in as a superuser (every view is open to them), every route, every writing method."""
    root = django_user_model.objects.create_superuser("root", password=None)
    client = Client(enforce_csrf_checks=True)
    verified_session(client, root)  # staff: with a second factor, as production requires
    accepted = []
    for route in ROUTES:
        for method in ("post", "put", "patch", "delete"):
            response = getattr(client, method)(route.path(), data="{}", content_type="application/json")
            if response.status_code not in (403, 405):
                accepted.append((route.name, method, response.status_code))
    assert len(ROUTES) > 100
    assert not accepted, accepted


def test_the_token_api_is_the_one_exception(db, django_user_model, host):
    """A script with a token needs no CSRF token (no cookie for another page to ride on)."""
    from rest_framework.authtoken.models import Token

    root = django_user_model.objects.create_superuser("root", password=None)
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=root).key}")
    response = client.post(f"/api/v1/hosts/{host.pk}/end-maintenance/", content_type="application/json")
    assert response.status_code == 200, response.content


# -- another user's ids in every portal URL ----------------------------------------------------------

def foreign_ids(alice_and_bob) -> dict:
    _alices, bobs, backup, bobs_pool = alice_and_bob
    return {"desktop_id": bobs.pk, "backup_id": backup.pk, "pool_id": bobs_pool.pk}


def test_every_id_in_a_portal_url_is_known_here():
    known = {"desktop_id", "backup_id", "pool_id"}
    for route in PORTAL_ROUTES_WITH_IDS:
        assert set(route.kwargs) <= known, f"{route.name}: say what another user's {route.kwargs} is"
    assert len(PORTAL_ROUTES_WITH_IDS) >= 7


def test_another_users_ids_in_every_portal_url_are_refused(client, employee, alice_and_bob):
    alices, bobs, _backup, _pool = alice_and_bob
    client.force_login(employee, backend="django.contrib.auth.backends.ModelBackend")
    before = list(Desktop.objects.filter(pk=bobs.pk).values_list("state", "user_id", "vnc_port"))
    answered = []
    for route in PORTAL_ROUTES_WITH_IDS:
        path = route.path(**foreign_ids(alice_and_bob))
        for method in ("get", "post"):
            response = getattr(client, method)(path)
            if response.status_code not in (403, 404, 405) or b"vditest-bob" in response.content:
                answered.append((path, method, response.status_code))
    assert not answered, answered
    assert list(Desktop.objects.filter(pk=bobs.pk).values_list("state", "user_id", "vnc_port")) == before
    assert not ConsoleTicket.objects.filter(desktop=bobs).exists()
    assert not Desktop.objects.filter(user=employee).exclude(pk=alices.pk).exists()  # nothing launched


def test_alices_own_ids_are_served(client, employee, alice_and_bob):
    """The control: the same URLs with her own ids answer (so the refusals above are about whose)."""
    alices = alice_and_bob[0]
    client.force_login(employee, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get(f"/desktops/{alices.pk}/").status_code == 200
    assert client.get(f"/desktops/{alices.pk}/status/").status_code == 200


# -- another operator's rows in every API route ----------------------------------------------------

from tests.api.conftest import clients, employees, site  # noqa: E402,F401  (the API's two-pool site)

API_DETAIL_ROUTES = [route for route in ROUTES if route.name.startswith("api:") and "pk" in route.kwargs]
SIDE_ROW = {"pool": "pool", "image": "image", "image-version": "version", "host": "host", "desktop": "desktop",
            "session": "console", "entitlement": "entitlement", "broker-event": "event",
            "live-migration": "migration", "job": "job"}


def side_row(site_b, basename):
    if basename == "desktop-event":
        from broker.models import DesktopEvent

        return DesktopEvent.objects.filter(desktop=site_b.desktop).first()
    if basename == "job":  # a long action on pool B (jobs are for the admin's roles, never operators)
        from broker.models import Job

        return Job.objects.create(kind=Job.Kind.POOL_RECOMPOSE, target_key=f"pool:{site_b.pool.pk}",
                                  target_label=str(site_b.pool), state=Job.State.SUCCEEDED)
    assert basename in SIDE_ROW, f"API route {basename!r}: say which row of pool B it reaches"
    return getattr(site_b, SIDE_ROW[basename])


def test_every_api_route_is_placed():
    from api.urls import router

    basenames = {basename for _prefix, _viewset, basename in router.registry}
    assert basenames <= set(SIDE_ROW) | {"desktop-event"}, basenames - set(SIDE_ROW)
    assert len(API_DETAIL_ROUTES) >= len(basenames)


@pytest.mark.parametrize("role", ["superuser", "staff", "operator", "auditor", "nobody"])
def test_every_api_route_without_an_id_answers_every_role_without_an_error(clients, role):
    """(GET /api/v1/ was a 500, an AttributeError, for everyone logged in before the fix.)"""
    for route in ROUTES:
        if route.name.startswith("api:") and not route.kwargs:
            response = clients[role].get(route.path())
            assert response.status_code < 500, (route.name, role, response.status_code)
            if role == "nobody" and route.name not in ("api:schema", "api:docs"):
                assert response.status_code == 403, (route.name, response.status_code)


def test_an_operator_reaches_no_row_of_another_pool_on_any_api_route(clients, site):
    from rest_framework.test import APIClient

    from api.scoping import POOL_PATH
    from tests.api.test_roles import world_state

    _a, b = site
    before = world_state()
    for route in API_DETAIL_ROUTES:
        row = side_row(b, basename_of(route))
        path = route.path(pk=row.pk)
        is_action = not route.regex.rstrip("$").rstrip("\\Z").endswith("(?P<pk>[^/.]+)/")
        # Operators read hosts and images (a move names a destination host), no row of another pool.
        reads = {404} if type(row) in POOL_PATH else {403} if basename_of(route) == "job" else {200}
        checks = [("nobody", "get", {403}), ("nobody", "post", {403, 405}), ("nobody", "delete", {403, 405}),
                  ("operator", "post", {403, 404, 405}), ("operator", "delete", {403, 404, 405})]
        if not is_action:
            checks.append(("operator", "get", reads))
        for role, method, allowed in checks:
            response = getattr(clients[role], method)(path, {}, format="json")
            assert response.status_code in allowed, (role, method, path, response.status_code)
            if type(row) in POOL_PATH or role == "nobody":
                assert b"pool-b" not in response.content and b"vdi-b-" not in response.content, (role, method, path)
        assert APIClient().get(path).status_code == 401
    assert world_state() == before


def basename_of(route) -> str:
    from api.urls import router

    for _prefix, _viewset, basename in sorted(router.registry, key=lambda entry: -len(entry[2])):
        if route.name.startswith(f"api:{basename}-"):
            return basename
    raise AssertionError(f"{route.name}: which router registration is it?")


# -- websockets: a foreign Origin, another user's desktop ---------------------------------------------

def ws_applications():
    from config.asgi import application

    # The gateway tier's module sets VDI_CONSOLE_TARGET_LOOKUP=recorded in the environment as it
    # is imported (its own process has no libvirt). Not in this one: every live stack started
    # later inherits this environment, and a portal looking consoles up from the record instead
    # of the live domain failed the console-target tests that came after these.
    had = os.environ.get("VDI_CONSOLE_TARGET_LOOKUP")
    try:
        from config.gateway_asgi import application as gateway_application
    finally:
        if had is None:
            os.environ.pop("VDI_CONSOLE_TARGET_LOOKUP", None)
        else:
            os.environ["VDI_CONSOLE_TARGET_LOOKUP"] = had
    return {"portal": application, "gateway tier": gateway_application}


WS_ROUTES = [(name, route) for name, app in ws_applications().items() for route in websocket_routes(app)]


async def first_answer(application, path, *, cookie, origin):
    headers = [(b"host", b"127.0.0.1"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())]
    if origin:
        headers.append((b"origin", origin.encode()))
    raw, _, query = path.partition("?")
    communicator = ApplicationCommunicator(application, {
        "type": "websocket", "path": raw, "query_string": query.encode(), "headers": headers, "scheme": "ws",
        "subprotocols": ["binary"], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)})
    await communicator.send_input({"type": "websocket.connect"})
    answers = [await asyncio.wait_for(communicator.output_queue.get(), 10)]
    if answers[0]["type"] == "websocket.accept":  # opened: what it says before it closes
        await communicator.send_input({"type": "websocket.receive", "bytes": b"RFB 003.008\n\x01"})
        try:
            while answers[-1]["type"] != "websocket.close":
                answers.append(await asyncio.wait_for(communicator.output_queue.get(), 3))
        except asyncio.TimeoutError:
            pass
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait(timeout=10)
    return answers


@pytest.fixture
def quick_channel_layer(settings):
    """Channels' in-memory layer for the refusal tests: every refusal happens before a consumer
    touches its layer, but a consumer on Redis takes seconds to end (its blocking read finishes
    first), which for 20 refusals would be most of this directory's time budget."""
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def test_every_websocket_route_is_known():
    assert {route.regex for _name, route in WS_ROUTES} >= {r"^ws/console/(?P<desktop_id>[0-9]+)/\Z",
                                                          r"^ws/launch/(?P<desktop_id>[0-9]+)/\Z"}
    for _name, route in WS_ROUTES:
        assert set(route.kwargs) <= {"desktop_id"}, f"{route.regex}: say what another user's {route.kwargs} is"


@pytest.mark.django_db(transaction=True)
def test_a_foreign_origin_opens_no_websocket_on_any_route(quick_channel_layer, employee, alice_and_bob):
    alices = alice_and_bob[0]
    cookie = session_cookie(employee)
    for app_name, route in WS_ROUTES:
        for origin in ["http://evil.example", "null", "http://127.0.0.1.evil.example", "http://127.0.0.1:8443",
                       "https://127.0.0.1", None]:
            ticket = issue_console_ticket(user=employee, session_key=cookie, desktop=alices, protocol="vnc",
                                          origin="http://127.0.0.1")
            answers = asyncio.run(first_answer(ws_applications()[app_name], route.path(desktop_id=alices.pk) +
                                               f"?ticket={ticket}", cookie=cookie, origin=origin))
            assert answers[0]["type"] in ("websocket.close", "websocket.http.response.start"), (
                app_name, route.regex, origin, answers)
    assert not ConsoleTicket.objects.filter(used_at__isnull=False).exists()  # not even looked at


@pytest.mark.django_db(transaction=True)
def test_another_users_desktop_opens_no_websocket_on_any_route(quick_channel_layer, employee, alice_and_bob,
                                                               echo_server):
    alices, bobs, _backup, _pool = alice_and_bob
    cookie = session_cookie(employee)
    for app_name, route in WS_ROUTES:
        ticket = issue_console_ticket(user=employee, session_key=cookie, desktop=alices, protocol="vnc",
                                      origin="http://127.0.0.1", console_password=echo_server.vnc_password)
        answers = asyncio.run(first_answer(ws_applications()[app_name], route.path(desktop_id=bobs.pk) +
                                           f"?ticket={ticket}", cookie=cookie, origin="http://127.0.0.1"))
        closes = [a for a in answers if a["type"] == "websocket.close"]
        assert closes and closes[-1].get("code") in (4404, 4411, 4403), (app_name, route.regex, answers)
        sent = [a for a in answers if a["type"] == "websocket.send"]
        assert all(b"vditest-bob" not in (a.get("bytes") or a.get("text", "").encode()) for a in sent)
        assert not any((a.get("bytes") or b"").startswith(b"RFB") for a in sent)  # no console of bob's
    assert echo_server.logins == 0


# -- headers on every page -----------------------------------------------------------------------------

GET_PAGES = [route for route in ROUTES if set(route.kwargs) <= {"desktop_id"} and ":" in route.name
             and not route.name.startswith("admin:") and route.name not in
             {"portal:logout", "portal:launch", "portal:console-ticket", "portal:end-session", "portal:restore"}
             ] + [route for route in ROUTES if route.name == "admin:index"]  # admin:login sends to the portal's


def test_every_page_carries_the_security_headers(client, django_user_model, employee, alice_and_bob):
    root = django_user_model.objects.create_superuser("root", password=None)
    alices = alice_and_bob[0]
    Desktop.objects.filter(pk=alices.pk).update(data_volume_name="vditest-alice-data.qcow2")  # the files page
    assert len(GET_PAGES) >= 12
    for route in GET_PAGES:
        client.logout()
        if route.name == "mfa:verify":  # the second step: a password step first
            from django_otp.plugins.otp_totp.models import TOTPDevice

            root.set_password("root-pass-12")
            root.save(update_fields=["password"])
            TOTPDevice.objects.get_or_create(user=root, name="phone", defaults={"confirmed": True})
            client.post("/login/", {"username": "root", "password": "root-pass-12"})
        elif route.name not in ("portal:login", "admin:login"):
            if route.name.startswith("portal:"):
                client.force_login(employee, backend="django.contrib.auth.backends.ModelBackend")
            else:
                verified_session(client, root)
        response = client.get(route.path(desktop_id=alices.pk))
        if response.status_code == 405:
            continue  # a POST-only route (an action, not a page)
        assert response.status_code == 200, (route.name, response.status_code)
        policy = response["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, route.name
        assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy, route.name
        assert response["X-Content-Type-Options"] == "nosniff", route.name
        assert response["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin-when-cross-origin")
        assert response["X-Frame-Options"] == "DENY", route.name
        if route.name not in ("portal:login", "admin:login"):
            assert "no-store" in response["Cache-Control"], route.name


@pytest.mark.django_db(transaction=True)
def test_ids_of_any_size_on_every_websocket_route_are_refused_cleanly(quick_channel_layer, employee,
                                                                      alice_and_bob):
    cookie = session_cookie(employee)
    for app_name, route in WS_ROUTES:
        for number in (0, 2**31, 2**63, 10**40, 10**120):
            answers = asyncio.run(first_answer(ws_applications()[app_name], route.path(desktop_id=number) +
                                               "?ticket=x", cookie=cookie, origin="http://127.0.0.1"))
            closes = [a for a in answers if a["type"] == "websocket.close"]
            assert closes and closes[-1].get("code") in (4404, 4411), (app_name, route.regex, number, answers)
