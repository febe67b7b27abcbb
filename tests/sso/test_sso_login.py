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
    page.click("text=Sign in with Test IdP")
    page.fill("input[name=login]", "sub-carol-1")
    page.fill("input[name=password]", "any")
    submitted = time.monotonic()
    page.click("button[type=submit]")
    page.wait_for_selector("text=My desktops", timeout=30_000)
    done = time.monotonic()
    # Chromium and the provider's login page included; a person's typing is not.
    write_measurement("sso: 'Sign in with' click to 'My desktops', provider form filled by the test (s)",
                      round(done - started, 2))
    write_measurement("sso: provider form submitted to 'My desktops' (s)", round(done - submitted, 2))

    assert pool_names(page) == ["Lab desktop", "Office desktop"]
    carol = User.objects.get(username="carol")
    assert not carol.has_usable_password()
    assert set(carol.groups.values_list("name", flat=True)) == {"Employees", "Lab"}
    assert OidcIdentity.objects.filter(user=carol, subject="sub-carol-1", issuer=oidc_provider.issuer).exists()
    login = AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN, actor=carol).get()
    assert login.message == "via single sign-on (Test IdP)"


def log_out_everywhere(page, stack):
    """The portal's "Log out": the portal session ends, then the provider asks to end its own."""
    page.click("text=Log out")
    page.click("button[name=logout]")  # the provider's "Yes, sign me out"
    page.wait_for_url(f"{stack.base_url}/login/", timeout=30_000)


def test_a_group_removed_at_the_provider_takes_effect_at_the_next_login(sso_stack, oidc_provider, browser, pools,
                                                                       echo_server):
    oidc_provider.set_account("sub-dave-1", username="dave", groups=["Employees", "Lab"])
    page = browser.new_page()
    sign_in_at_provider(page, sso_stack, "sub-dave-1")
    assert pool_names(page) == ["Lab desktop", "Office desktop"]
    dave = User.objects.get(username="dave")
    lab_desktop = running_desktop_on(echo_server, pool=pools["lab"], user=dave, name="vditest-sso-lab")

    log_out_everywhere(page, sso_stack)
    assert not OidcLoginSession.objects.filter(user=dave).exists()
    # The provider's session ended too (RP-initiated logout): it asks for the login again.
    oidc_provider.set_account("sub-dave-1", username="dave", groups=["Employees"])
    sign_in_at_provider(page, sso_stack, "sub-dave-1")

    assert pool_names(page) == ["Office desktop"]
    assert set(dave.groups.values_list("name", flat=True)) == {"Employees"}
    # As when a directory group is lost: the desktop is held for the pool's grace period.
    deadline = time.monotonic() + 20
    while Desktop.objects.get(pk=lab_desktop.pk).delete_after is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert Desktop.objects.get(pk=lab_desktop.pk).delete_after is not None

    # No entitled group left: the login is refused, with a page that says why.
    log_out_everywhere(page, sso_stack)
    oidc_provider.set_account("sub-dave-1", username="dave", groups=["Marketing"])
    sign_in_at_provider(page, sso_stack, "sub-dave-1", next_page="text=Sign-in did not succeed")
    assert "no access to any desktop" in page.inner_text(".sso-refused")
    dave.refresh_from_db()
    assert not dave.is_active
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SSO_LOGIN_FAILED, username="dave",
                                     message__contains="no access").exists()


def test_logging_out_at_the_provider_closes_the_open_console(sso_stack, oidc_provider, browser, pools):
    oidc_provider.set_account("sub-erin-1", username="erin", groups=["Employees"])
    page = browser.new_page()
    sign_in_at_provider(page, sso_stack, "sub-erin-1")
    page.click("article.pool[data-pool=desk] button.launch")
    page.wait_for_url(re.compile(r"/desktops/\d+/$"))
    wait_for_page(page, "window.vdiConsole && window.vdiConsole.phase === 'connected'", timeout=180_000)
    erin = User.objects.get(username="erin")
    assert OidcLoginSession.objects.filter(user=erin).exclude(sid="").count() == 1

    # Another tab, at the provider: sign out there. The provider tells the portal (back-channel).
    provider_tab = browser.new_page()
    provider_tab.goto(f"{oidc_provider.issuer}/session/end")
    provider_tab.click("button[name=logout]")
    provider_tab.wait_for_selector("text=Sign-out Success")

    wait_for_page(page, "window.vdiConsole.closeCode === 4401", timeout=20_000)
    assert page.evaluate("window.vdiConsole.closeReason") == "You signed out at Test IdP. Log in again."
    assert not OidcLoginSession.objects.filter(user=erin).exists()
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SSO_LOGOUT, actor=erin).count() == 1
    page.goto(f"{sso_stack.base_url}/")
    assert "/login/" in page.url  # the portal session is gone
