"""The single sign-on tests' stack: a real OpenID Connect provider (panva's oidc-provider under
Node, tests/support/oidc.py) and the real portal and worker configured to use it through the
README's VDI_OIDC_* variables."""

import os

import pytest

from tests.support.oidc import OidcProvider
from tests.support.stack import LiveStack, free_port

# Playwright's sync API keeps an event loop in this thread; the ORM calls in the tests are
# plain blocking calls between browser steps, which is safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


class SsoStack(LiveStack):
    """The live stack (uvicorn + Celery worker) with single sign-on configured."""

    def __init__(self, extra_env: dict):
        super().__init__()
        self.extra_env = extra_env
        # It lives as long as the session, beside the suite's own live stack: its own queue (its
        # worker must not take the other stack's tasks) and its own logs.
        self.log_dir = self.log_dir / "sso"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict:
        from django.conf import settings

        return {**super().env(), "CELERY_TASK_DEFAULT_QUEUE": f"{settings.CELERY_TASK_DEFAULT_QUEUE}-sso",
                **self.extra_env}


@pytest.fixture(scope="session")
def oidc_provider_and_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("oidc-provider")
    provider_port = free_port()
    stack = SsoStack({})
    provider = OidcProvider(workdir, portal_url=stack.base_url, port=provider_port,
                            log_file=stack.log_dir / "oidc-provider.log")
    stack.extra_env = provider.portal_env()
    provider.start()
    try:
        stack.start()
        yield provider, stack
    finally:
        stack.stop()
        provider.stop()


@pytest.fixture
def oidc_provider(oidc_provider_and_stack):
    provider = oidc_provider_and_stack[0]
    if provider.process is None or provider.process.poll() is not None:
        provider.start()  # a test stopped it
    return provider


@pytest.fixture
def sso_stack(oidc_provider_and_stack, oidc_provider):
    return oidc_provider_and_stack[1]


def sign_in_at_provider(page, stack, login: str, *, next_page="text=My desktops"):
    """From the portal's login page through the provider's own login form, back to the portal."""
    page.goto(f"{stack.base_url}/login/")
    page.click("text=Sign in with Test IdP")
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    if next_page:
        page.wait_for_selector(next_page, timeout=30_000)
