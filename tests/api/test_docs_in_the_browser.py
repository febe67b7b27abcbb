"""The API's docs page (/api/docs/) opened in headless Chromium, as an admin reads it: Swagger UI
runs under the portal's Content-Security-Policy (no script refused, no error in the console),
loads the schema and lists the operations; "Try it out" is there for the browser's session."""

import os

import pytest

from tests.support.browser import browser, wait_for_page  # noqa: F401
from tests.support.mfa import log_in_staff_in_browser

# Playwright's sync API runs an event loop in this thread; the ORM calls here are plain sync ones.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_docs_page_draws_every_resource_in_chromium(live_stack, browser, django_user_model):
    root = django_user_model.objects.create_superuser("apidocs", password="api-docs-Pass-1")
    page = browser.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in_staff_in_browser(page, live_stack.base_url, root, "api-docs-Pass-1", next_path="/api/docs/")
    assert page.url == f"{live_stack.base_url}/api/docs/"

    wait_for_page(page, "document.querySelectorAll('.opblock').length > 20", timeout=30_000)
    paths = set(page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.dataset.path)"))
    for resource in ("pools", "hosts", "desktops", "sessions", "entitlements", "jobs"):
        assert f"/api/v1/{resource}/" in paths, sorted(paths)
    assert "/api/v1/desktops/{id}/move/" in paths
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors
    assert not errors, errors
