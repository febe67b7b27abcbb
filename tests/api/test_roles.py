"""Every endpoint against every role: who lists what, who may read a row, who may act.

An operator of pool A never sees pool B's rows (lists), gets 404 for them (details and
actions, as for a row that does not exist: no IDOR), and cannot act beyond pool A; an auditor
reads everything and gets 403 on every write; someone with no role gets 403; no token, 401.
"""

import pytest

from broker.models import Desktop, DesktopEvent, Entitlement, Host, LiveMigration

from .conftest import ROLES

# endpoint -> the row of a side it lists, and whether operators are scoped to their pools there
ENDPOINTS = {
    "pools": (lambda s: s.pool, True),
    "images": (lambda s: s.image, False),
    "image-versions": (lambda s: s.version, False),
    "hosts": (lambda s: s.host, False),
    "desktops": (lambda s: s.desktop, True),
    "sessions": (lambda s: s.console, True),
    "entitlements": (lambda s: s.entitlement, True),
    "desktop-events": (lambda s: DesktopEvent.objects.filter(desktop=s.desktop).first(), True),
    "broker-events": (lambda s: s.event, True),
    "live-migrations": (lambda s: s.migration, True),
}
# (method, path of a side's row, body, model permission the admin asks for it)
WRITES = [
    ("post", lambda s: f"hosts/{s.host.pk}/drain/", {"migrate": False}),
    ("post", lambda s: f"hosts/{s.host.pk}/end-maintenance/", None),
    ("post", lambda s: f"pools/{s.pool.pk}/recompose/", None),
    ("post", lambda s: f"desktops/{s.desktop.pk}/move/", {}),
    ("post", lambda s: f"desktops/{s.desktop.pk}/end-session/", None),
    ("delete", lambda s: f"desktops/{s.desktop.pk}/", None),
    ("delete", lambda s: f"entitlements/{s.entitlement.pk}/", None),
    ("post", lambda s: "entitlements/", lambda s: {"pool": s.pool.pk, "user": s.desktop.user_id}),
]
OPERATOR_WRITES = {"desktops", "entitlements"}


def url(path: str) -> str:
    return f"/api/v1/{path}"


def listed_ids(response) -> set[int]:
    return {row["id"] for row in response.json()["results"]}


def world_state():
    """Everything a write could change."""
    return (list(Desktop.objects.order_by("pk").values_list("pk", "state", "user_id")),
            list(Host.objects.order_by("pk").values_list("pk", "in_maintenance")),
            list(Entitlement.objects.order_by("pk").values_list("pk", "pool_id", "user_id", "group_id")),
            LiveMigration.objects.count())


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("role", ROLES)
def test_a_list_shows_each_role_what_it_may_see(clients, site, endpoint, role):
    a, b = site
    row_of, scoped = ENDPOINTS[endpoint]
    response = clients[role].get(url(f"{endpoint}/"))
    if role == "nobody":
        assert response.status_code == 403
        return
    assert response.status_code == 200, response.content
    ids = listed_ids(response)
    assert row_of(a).pk in ids
    if role in ("operator", "group_operator") and scoped:
        assert row_of(b).pk not in ids, f"an operator of pool A sees pool B's {endpoint}"
    else:
        assert row_of(b).pk in ids


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("role", ["operator", "group_operator"])
def test_an_operator_of_pool_a_gets_404_for_pool_b_rows(clients, site, endpoint, role):
    a, b = site
    row_of, scoped = ENDPOINTS[endpoint]
    assert clients[role].get(url(f"{endpoint}/{row_of(a).pk}/")).status_code == 200
    other = clients[role].get(url(f"{endpoint}/{row_of(b).pk}/"))
    assert other.status_code == (404 if scoped else 200)


def test_filters_do_not_open_another_pool_to_an_operator(clients, site):
    a, b = site
    for path in (f"desktops/?pool={b.pool.pk}", f"sessions/?pool={b.pool.pk}", f"desktop-events/?pool={b.pool.pk}",
                 f"entitlements/?pool={b.pool.pk}", f"broker-events/?pool={b.pool.pk}",
                 f"live-migrations/?pool={b.pool.pk}", f"desktops/?host={b.host.pk}",
                 f"desktops/?user={b.desktop.user.username}"):
        response = clients["operator"].get(url(path))
        assert response.status_code == 200 and response.json()["results"] == [], path


@pytest.mark.parametrize("write", range(len(WRITES)))
@pytest.mark.parametrize("role", ["operator", "group_operator"])
def test_an_operator_changes_nothing_of_pool_b(clients, site, role, write):
    a, b = site
    method, path, body = WRITES[write]
    body = body(b) if callable(body) else body
    before = world_state()
    response = getattr(clients[role], method)(url(path(b)), body, format="json")
    resource = path(b).split("/")[0]
    if resource in OPERATOR_WRITES:
        # Not found (row outside their scope), or for a create, "no such pool".
        assert response.status_code in (404, 400), response.content
        if response.status_code == 400:
            assert "pool" in response.json()
    else:
        assert response.status_code == 403  # hosts and pools: read-only for operators
    assert world_state() == before


@pytest.mark.parametrize("write", range(len(WRITES)))
def test_an_auditor_gets_403_on_every_write(clients, site, write):
    a, _ = site
    method, path, body = WRITES[write]
    body = body(a) if callable(body) else body
    before = world_state()
    response = getattr(clients["auditor"], method)(url(path(a)), body, format="json")
    assert response.status_code == 403
    assert world_state() == before


@pytest.mark.parametrize("write", range(len(WRITES)))
def test_someone_with_no_role_gets_403_on_every_write(clients, site, write):
    a, _ = site
    method, path, body = WRITES[write]
    body = body(a) if callable(body) else body
    before = world_state()
    assert getattr(clients["nobody"], method)(url(path(a)), body, format="json").status_code == 403
    assert world_state() == before


def test_staff_who_may_only_view_may_not_act(site, django_user_model):
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    a, _ = site
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_",
                                                           content_type__app_label="broker"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    assert client.get(url("desktops/")).status_code == 200
    before = world_state()
    for method, path, body in WRITES:
        body = body(a) if callable(body) else body
        assert getattr(client, method)(url(path(a)), body, format="json").status_code == 403, path(a)
    assert world_state() == before


def test_without_a_token_the_api_answers_401(site):
    from rest_framework.test import APIClient

    for endpoint in ENDPOINTS:
        assert APIClient().get(url(f"{endpoint}/")).status_code == 401
