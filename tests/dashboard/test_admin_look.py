"""The admin looks like the product and fits a laptop: headless Chromium at 1280 px on the real
stack opens every list of the broker's and the directory's models, filled with rows, and finds no
horizontal overflow; the index leads with the dashboard; a host's and a pool's actions are
buttons on their change pages and work from there."""

import os
from datetime import timedelta

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from tests.support.browser import browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
LONG = "the guest did not answer within 120 s: its serial log ends with 'Probing EDD (edd=off to disable)'"


def fill_every_list(site):
    from django.contrib.auth.models import Group

    from broker.models import BrokerEvent, DataDiskBackup, DesktopEvent, Entitlement, LiveMigration
    from identity.models import AuditEvent, DirectoryAccount, DirectoryGroup, DirectorySyncRun, LoginLockout

    desktop = site["in_use"][0]
    user = site["users"][0]
    group = Group.objects.create(name="vdi-call-centre-agents-europe")
    Entitlement.objects.create(pool=site["office"], group=group)
    DesktopEvent.objects.create(desktop=desktop, from_state="starting", to_state="running", message=LONG, actor=user)
    BrokerEvent.objects.create(kind="host", host=site["big"], pool=site["office"], message=LONG)
    LiveMigration.objects.create(desktop=desktop, source=site["big"], destination=site["small"], reason="drain",
                                 state="failed", error=LONG, requested_by=user)
    DataDiskBackup.objects.create(desktop=desktop, host=site["big"], storage_pool="vdi-backups",
                                  volume_name="vdi-office-0001-data-20261207T040000.qcow2", state="done",
                                  size_bytes=3 * 2**30, finished_at=timezone.now())
    DirectorySyncRun.objects.create(status="failed", trigger="schedule", users_seen=1234, groups_seen=56,
                                    errors=[LONG, LONG], finished_at=timezone.now())
    LoginLockout.objects.create(scope="user", key="some.employee.with.a.long.name", failures=10,
                                locked_until=timezone.now() + timedelta(minutes=15))
    AuditEvent.objects.create(kind="login_failed", username="some.employee.with.a.long.name",
                              client_address="2001:db8:1234:5678:9abc:def0:1234:5678", target="portal", message=LONG)
    DirectoryGroup.objects.create(dn="cn=vdi-call-centre-agents-europe,ou=groups,dc=example,dc=com",
                                  name=group.name, group=group)
    DirectoryAccount.objects.create(user=user, dn="uid=user0,ou=people,ou=europe,dc=example,dc=com")


def log_in(page, base_url, username, password):
    from django.contrib.auth import get_user_model

    from tests.support.mfa import log_in_staff_in_browser

    log_in_staff_in_browser(page, base_url, get_user_model().objects.get(username=username), password)
    page.wait_for_selector("#site-name")


# The page must not scroll sideways, nor the list inside its own scrolling box (Django's admin
# lets a wide table scroll there).
OVERFLOW = """() => {
  const box = document.querySelector('#changelist .results') || {scrollWidth: 0, clientWidth: 0};
  return {page: document.documentElement.scrollWidth, view: window.innerWidth,
          table: box.scrollWidth, box: box.clientWidth};
}"""


def test_every_list_fits_a_1280_px_screen(live_stack, browser, site, django_user_model):  # noqa: F811
    fill_every_list(site)
    django_user_model.objects.create_superuser("boss", password="pw-boss-12")
    page = browser.new_page()
    assert page.viewport_size["width"] == 1280
    log_in(page, live_stack.base_url, "boss", "pw-boss-12")
    assert page.inner_text("#site-name") == "VDI broker administration"
    assert "Django administration" not in page.content()
    assert page.locator("#vdi-dashboard-lead a[href='/admin/dashboard/']").count() >= 1
    too_wide = {}
    models = [model for model in admin.site._registry if model._meta.app_label in ("broker", "identity")]
    assert len(models) >= 15
    for model in models:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = page.goto(f"{live_stack.base_url}{url}")
        assert response.status == 200, url
        sizes = page.evaluate(OVERFLOW)
        if sizes["page"] > sizes["view"] or sizes["table"] > sizes["box"]:
            too_wide[url] = sizes
    assert not too_wide, f"lists wider than a 1280 px screen: {too_wide}"


def test_a_hosts_and_a_pools_actions_are_buttons_on_their_pages(live_stack, browser, site,  # noqa: F811
                                                                  django_user_model):
    from broker.models import Host

    django_user_model.objects.create_superuser("boss", password="pw-boss-12")
    page = browser.new_page()
    log_in(page, live_stack.base_url, "boss", "pw-boss-12")
    page.goto(f"{live_stack.base_url}{reverse('admin:broker_pool_change', args=[site['office'].pk])}")
    pool_buttons = page.locator(".vdi-object-actions button").all_inner_texts()
    assert any(text.startswith("Reconcile now") for text in pool_buttons)
    assert any(text.startswith("Recompose now") for text in pool_buttons)

    big = site["big"]
    page.goto(f"{live_stack.base_url}{reverse('admin:broker_host_change', args=[big.pk])}")
    assert not Host.objects.get(pk=big.pk).in_maintenance
    page.click(".vdi-object-actions button[data-action=drain]")
    page.wait_for_selector("ul.messagelist")
    assert "New desktops go to other hosts now" in page.inner_text("ul.messagelist")
    assert Host.objects.get(pk=big.pk).in_maintenance
