"""The OpenAPI schema is valid OpenAPI 3, schemathesis's generated requests against every
operation (as a superuser, on a site with rows) get no server error and answers that match the
schema, and the docs page runs under the portal's Content-Security-Policy."""

import re

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

EXAMPLES = 20  # generated cases per operation


def test_the_schema_is_valid_openapi_3(client, db):
    from openapi_spec_validator import validate

    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    validate(schema)
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    for resource in ("pools", "images", "image-versions", "hosts", "desktops", "sessions", "entitlements",
                     "desktop-events", "broker-events", "live-migrations"):
        assert f"/api/v1/{resource}/" in paths
    for action in ("/api/v1/hosts/{id}/drain/", "/api/v1/hosts/{id}/end-maintenance/", "/api/v1/desktops/{id}/move/",
                   "/api/v1/desktops/{id}/end-session/", "/api/v1/pools/{id}/recompose/"):
        assert action in paths
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_the_docs_page_has_no_inline_script_and_its_scripts_are_ours(client, db):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    html = page.content.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts
    for attributes, body in scripts:
        assert not body.strip(), "an inline script would not run under script-src 'self'"
        src = re.search(r'src="([^"]+)"', attributes).group(1)
        assert src.startswith("/"), f"{src} is not on the portal's own origin"
        served = client.get(src)
        assert served.status_code == 200, src
        assert b"".join(served.streaming_content if served.streaming else [served.content]).strip()


@pytest.fixture
def api_schema(clients, site):
    raw = clients["superuser"].get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = get_wsgi_application()
    # The requests run in this thread, inside the test's transaction: Django's request signals
    # must not close that connection (what its own test client does too).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield schema
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(clients):
    return clients["superuser"]._credentials["HTTP_AUTHORIZATION"]


def test_generated_requests_get_no_server_error(api_schema, token):
    """Each operation in turn, with schemathesis's generated cases (a loop of our own over
    hypothesis: schemathesis's pytest plugin does not run on pytest 9). Errors are collected so
    that one run names every failing operation."""
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  phases=[Phase.explicit, Phase.generate])
        def run(case):
            case.call_and_validate(headers={"Authorization": token},
                                   checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except Exception as failure:  # noqa: BLE001 - reported below, with the operation
            failures.append(f"{operation.label}: {str(failure)[:1500]}")
    assert not failures, "\n\n".join(failures)
