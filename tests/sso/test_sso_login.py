"""Signing in through a real OpenID Connect provider in headless Chromium: the pools the
provider's groups entitle, a console, the groups kept in line at each login, and the provider's
logout ending the portal session and closing the open console (back-channel logout)."""

import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from broker.models import Desktop, Entitlement, Pool
from identity.models import AuditEvent, OidcIdentity, OidcLoginSession
from tests.sso.conftest import sign_in_at_provider
from tests.support.browser import browser, wait_for_page  # noqa: F401
from tests.support.desktops import running_desktop_on
from tests.support.measurements import write_measurement

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
User = get_user_model()


@pytest.fixture
def pools(pool):
    """"Office desktop" for the Employees group, "Lab desktop" for Lab, "Finance" for nobody here."""
    employees, _ = Group.objects.get_or_create(name="Employees")
    lab_group = Group.objects.create(name="Lab")
    lab = Pool.objects.create(name="lab", display_name="Lab desktop", image=pool.image)
    finance = Pool.objects.create(name="fin", display_name="Finance desktop", image=pool.image)
    Entitlement.objects.create(pool=pool, group=employees)
    Entitlement.objects.create(pool=lab, group=lab_group)
    Entitlement.objects.create(pool=finance, group=Group.objects.create(name="Finance"))
    return {"desk": pool, "lab": lab, "fin": finance}


def pool_names(page) -> list[str]:
    return sorted(page.locator("article.pool h2").all_inner_texts())


def test_signing_in_through_the_provider_shows_the_pools_its_groups_entitle(sso_stack, oidc_provider, browser,
                                                                           pools):
    oidc_provider.set_account("sub-carol-1", username="carol", groups=["Employees", "Lab"], name="Carol")
    page = browser.new_page()
    page.goto(f"{sso_stack.base_url}/login/")
    assert page.locator("input[name=password]").count() == 1  # the password form stays, for local accounts
    started = time.monotonic()
    sign_in_at_provider(page, sso_stack, "sub-carol-1", next_page=None)
    # The provider's login form was submitted; from here to "My desktops" is the round trip.
    page.wait_for_selector("text=My desktops", timeout=30_000)
    write_measurement("sso: provider login form to 'My desktops' (s)", round(time.monotonic() - started, 2))

    assert pool_names(page) == ["Lab desktop", "Office desktop"]
    carol = User.objects.get(username="carol")
    assert not carol.has_usable_password()
    assert set(carol.groups.values_list("name", flat=True)) == {"Employees", "Lab"}
    assert OidcIdentity.objects.filter(user=carol, subject="sub-carol-1", issuer=oidc_provider.issuer).exists()
    login = AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN, actor=carol).get()
    assert login.message == "via single sign-on (Test IdP)"
