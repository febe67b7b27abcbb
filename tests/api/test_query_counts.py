"""Every list endpoint runs as many SQL queries with 50 desktops as with 5 (no query per row),
for an admin and for an operator (whose scope adds its own fixed queries)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from api.models import OperatorScope
from broker.models import BrokerEvent, Desktop, Entitlement, LiveMigration, Pool
from tests.test_admin_query_counts import add_desktops

from .test_roles import ENDPOINTS


def add_history(start_pk: int):
    for desktop in Desktop.objects.filter(pk__gte=start_pk).select_related("host", "pool"):
        desktop.note("a note")
        if desktop.user_id:
            Entitlement.objects.get_or_create(pool=desktop.pool, user=desktop.user)
        BrokerEvent.objects.create(kind=BrokerEvent.Kind.POOL, pool=desktop.pool, host=desktop.host, message="x")
        if desktop.host_id:
            LiveMigration.objects.create(desktop=desktop, source=desktop.host, reason="admin", state="completed")


def count(client, endpoint):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/api/v1/{endpoint}/?limit=500")
    assert response.status_code == 200
    return len(captured.captured_queries), response.json()["count"]


@pytest.mark.parametrize("role", ["superuser", "operator"])
def test_a_list_runs_as_many_queries_with_50_desktops_as_with_5(clients, django_user_model, role):
    client = clients[role]
    scope = OperatorScope.objects.get(user__username="op-a")

    def grow(start, stop):
        first = (Desktop.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
        add_desktops(django_user_model, start, stop)
        add_history(first)
        scope.pools.add(*Pool.objects.all())  # the operator sees the new pools

    grow(0, 5)
    for endpoint in ENDPOINTS:
        client.get(f"/api/v1/{endpoint}/")  # first-request caches
    small = {endpoint: count(client, endpoint) for endpoint in ENDPOINTS}
    grow(5, 50)
    large = {endpoint: count(client, endpoint) for endpoint in ENDPOINTS}
    for endpoint in ENDPOINTS:
        (small_queries, small_rows), (large_queries, large_rows) = small[endpoint], large[endpoint]
        if endpoint not in ("images", "image-versions", "hosts", "pools") or large_rows != small_rows:
            assert large_rows > small_rows, endpoint
        assert large_queries == small_queries, f"{endpoint}: {small_queries} queries for {small_rows} rows, " \
                                               f"{large_queries} for {large_rows}"
