"""What a browser or a script sends over HTTP besides the URL's route: the API's query strings
(filters, ordering, paging, on every list route), the portal's form fields, and ids of any size
in every portal URL. Each gets an answer below 500, never a traceback."""

import pytest
from django.test import Client
from hypothesis import example, given
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from tests.hostile.enumerate import http_routes
from tests.hostile.support import hostile

pytestmark = pytest.mark.django_db

LIST_ROUTES = [route for route in http_routes() if route.name.startswith("api:") and route.name.endswith("-list")
               and "format" not in route.kwargs]
PARAMETERS = ["pool", "host", "image", "state", "user", "spare", "kind", "is_enabled", "in_maintenance",
              "is_online", "storage_group", "desktop", "open", "protocol", "group", "ordering", "page",
              "page_size", "limit", "offset", "format", "search", "created_at__gte", "since", "image_version",
              "application", "farm", "is_published"]
values = st.one_of(st.text(max_size=12), st.integers(-2**80, 2**80).map(str),
                   st.sampled_from(["", "-", "true", "null", "[]", "{}", "%00", "\x00", "1,2", "-id", "?", "-pk",
                                    "running", "9" * 40, "1e400", "nan", "__class__", "user__password",
                                    "-user__password", "pool__name"]))


@pytest.fixture
def api(db, django_user_model):
    root = django_user_model.objects.create_superuser("root", password=None)
    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=root).key}")


@hostile(max_examples=120)
@given(index=st.integers(0, len(LIST_ROUTES) - 1),
       query=st.lists(st.tuples(st.sampled_from(PARAMETERS), values), max_size=4))
@example(index=0, query=[("ordering", "user__password")])
@example(index=0, query=[("page", "9" * 40)])
@example(index=0, query=[("pool", "\x00")])
def test_no_query_string_breaks_an_api_list(api, index, query):
    route = LIST_ROUTES[index]
    response = api.get(route.path(), query)
    assert response.status_code < 500, (route.name, query, response.status_code)
    assert b"Traceback" not in response.content
    if response.status_code == 200 and any(k == "ordering" and "password" in v for k, v in query):
        assert b"pbkdf2" not in response.content and b"md5$" not in response.content


def test_every_list_route_is_tried():
    assert len(LIST_ROUTES) >= 10


@pytest.fixture
def alice(client, employee, pool):
    client.force_login(employee, backend="django.contrib.auth.backends.ModelBackend")
    return client


@hostile(max_examples=60)
@given(app=st.one_of(st.text(max_size=10), st.integers(-2**70, 2**70).map(str),
                     st.sampled_from(["abc", "1.5", "\x00", "9" * 30, "-1", " 1"])))
@example(app="abc")  # a ValueError (a 500) before the fix
@example(app="9" * 30)
def test_a_launch_with_any_application_field_answers_below_500(alice, pool, app):
    from broker.models import Desktop

    before = Desktop.objects.count()
    response = alice.post(f"/pools/{pool.pk}/launch/", {"app": app})
    assert response.status_code in (302, 404), (app, response.status_code)
    if app:  # no published app of that id: nothing launched ("" launches the pool's desktop)
        assert response.status_code == 404 and Desktop.objects.count() == before, (app, response.status_code)


@hostile(max_examples=40)
@given(protocol=st.one_of(st.text(max_size=10), st.sampled_from(["vnc", "spice", "rdp", "VNC", "\x00", ""])))
def test_a_console_ticket_with_any_protocol_field_answers_below_500(alice, employee, pool, host, protocol):
    from broker.models import Desktop, DesktopState

    desktop = Desktop.objects.get_or_create(pool=pool, user=employee, host=host, name="vditest-http",
                                            image_version=pool.image.current_version(),
                                            defaults={"state": DesktopState.STOPPED})[0]
    response = alice.post(f"/desktops/{desktop.pk}/console-ticket/", {"protocol": protocol})
    assert response.status_code in (403, 409), (protocol, response.status_code)  # a stopped desktop: no ticket
    assert "error" in response.json()


PORTAL_ID_ROUTES = [route for route in http_routes() if route.name.startswith("portal:") and route.kwargs]


@hostile(max_examples=40)
@given(number=st.one_of(st.integers(0, 10**40), st.sampled_from([2**31, 2**63, 2**63 - 1, 2**64, 0])),
       index=st.integers(0, len(PORTAL_ID_ROUTES) - 1), method=st.sampled_from(["get", "post"]))
def test_ids_of_any_size_in_every_portal_url_are_a_404(alice, number, index, method):
    route = PORTAL_ID_ROUTES[index]
    response = getattr(alice, method)(route.path(**{name: number for name in route.kwargs}))
    assert response.status_code in (404, 405), (route.name, number, response.status_code)


# -- the API's request bodies, on every route that takes one ------------------------------------------

from tests.api.conftest import clients, employees, site  # noqa: E402,F401  (the API's two-pool site)

WRITE_ROUTES = [route for route in http_routes() if route.name.startswith("api:") and "format" not in route.kwargs
                and (route.name.endswith("-list") or not route.name.endswith("-detail"))
                and route.name not in ("api:api-root", "api:schema", "api:docs")]
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                                     st.text(max_size=8)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=6)
bodies = st.dictionaries(st.sampled_from(["migrate", "destination", "host", "pool", "user", "group", "reason",
                                          "id", "desktop", "x"]), json_values, max_size=3)


@hostile(max_examples=80)
@given(index=st.integers(0, 10**6), body=st.one_of(bodies, json_values))
@example(index=0, body={"destination": "9" * 30})
@example(index=0, body={"pool": [1, 2], "user": {"a": None}})
def test_no_request_body_breaks_an_api_write(clients, site, index, body):
    a, _b = site
    rows = {"pool": a.pool, "host": a.host, "desktop": a.desktop}
    routes = [route for route in WRITE_ROUTES if route.name.endswith("-list") and "entitlement" in route.name
              or not route.name.endswith("-list")]
    route = routes[index % len(routes)]
    kind = route.name.split(":", 1)[1].split("-", 1)[0]
    path = route.path(pk=rows[kind].pk) if "pk" in route.kwargs else route.path()
    response = clients["superuser"].post(path, body, format="json")
    assert response.status_code < 500, (route.name, body, response.status_code)
    assert response["Content-Type"].startswith("application/json"), (route.name, response["Content-Type"])


# -- the body cap in front of Django (config/request_limits.py) ------------------------------------------

@pytest.mark.django_db(transaction=True)
@hostile(max_examples=30)
@given(declared=st.one_of(st.binary(max_size=8), st.integers(-10, 2**70).map(lambda n: str(n).encode()),
                          st.sampled_from([b"", b"1e3", b" 10", b"\xb2", b"0x10", b"10, 10"])),
       chunks=st.lists(st.binary(max_size=600_000), max_size=3))
@example(declared=b"5", chunks=[b"x" * 1_100_000])  # a body longer than it said and than the cap
def test_any_content_length_and_body_get_an_answer(declared, chunks):
    import asyncio

    from asgiref.testing import ApplicationCommunicator

    from config.asgi import application

    async def attempt():
        communicator = ApplicationCommunicator(application, {
            "type": "http", "method": "POST", "path": "/login/", "query_string": b"", "scheme": "http",
            "headers": [(b"host", b"testserver"), (b"content-length", declared),
                        (b"content-type", b"application/x-www-form-urlencoded")],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "http_version": "1.1",
            "asgi": {"version": "3.0"}})
        for index, chunk in enumerate(chunks or [b""]):
            await communicator.send_input({"type": "http.request", "body": chunk,
                                           "more_body": index < len(chunks) - 1})
        start = await asyncio.wait_for(communicator.output_queue.get(), 20)
        await communicator.wait(timeout=20)
        return start

    start = asyncio.run(attempt())
    assert start["type"] == "http.response.start" and start["status"] in (403, 413), start
    if sum(map(len, chunks)) > 1024 * 1024 or not declared.isdigit() or int(declared) > 1024 * 1024:
        assert start["status"] == 413
