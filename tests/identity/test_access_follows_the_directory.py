"""Losing a group in the directory ends access: consoles on that pool close, and the dedicated
desktop is held for the pool's grace period, then deleted (broker.services.access does that,
on the membership change the sync makes through the ORM)."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed
from django.urls import reverse
from django.utils import timezone

from broker.models import Desktop, DesktopState
from broker.console import control as console_control
from tests.identity.conftest import group_names, login, run_sync
from tests.support.slapd import group_dn, user_dn

User = get_user_model()


def desktop_of(user, pool, company):
    return Desktop.objects.create(pool=pool, user=user, host=company.host,
                                  image_version=company.image.current_version(),
                                  name=f"vditest-{pool.name}-{user.username}", state=DesktopState.RUNNING)


class ConsoleCloses:
    """Listens where the console gateways listen: the channel-layer group of one desktop."""

    def __init__(self, desktop):
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        self.group = console_control.desktop_group(desktop.pk)
        async_to_sync(self.layer.group_add)(self.group, self.channel)

    def next(self, timeout=5.0):
        import asyncio

        async def receive():
            return await asyncio.wait_for(self.layer.receive(self.channel), timeout)

        return async_to_sync(receive)()

    def close(self):
        async_to_sync(self.layer.group_discard)(self.group, self.channel)


@pytest.fixture
def membership_changes():
    seen = []

    def record(sender, instance, action, reverse, pk_set, **kwargs):
        if action in ("post_add", "post_remove"):
            seen.append((action, instance, reverse, set(pk_set or ())))

    m2m_changed.connect(record, sender=User.groups.through)
    yield seen
    m2m_changed.disconnect(record, sender=User.groups.through)


def test_leaving_a_group_closes_the_consoles_and_holds_the_desktop_for_the_grace_period(
        use_ldap, company, directory, membership_changes, django_capture_on_commit_callbacks):
    run_sync()
    bob = User.objects.get(username="bob")
    engineering_desktop = desktop_of(bob, company.eng_pool, company)  # entitled only through Engineering
    finance_desktop = desktop_of(bob, company.fin_pool, company)
    consoles = ConsoleCloses(engineering_desktop)
    membership_changes.clear()
    directory.remove_value(group_dn("Engineering"), "member", user_dn("bob"))

    with django_capture_on_commit_callbacks(execute=True):
        run = run_sync()

    bob.refresh_from_db()
    assert bob.is_active and group_names(bob) == {"Finance"} and run.memberships_removed == 1
    # The sync removed the membership through the ORM, from bob's side: the broker's signal saw it.
    assert [(a, i.pk, r, p) for a, i, r, p in membership_changes] == [
        ("post_remove", bob.pk, False, {company.engineering.pk})]
    engineering_desktop.refresh_from_db()
    finance_desktop.refresh_from_db()
    expected = timezone.now() + timedelta(hours=48)  # the pool's grace period
    assert engineering_desktop.delete_after is not None
    assert abs(engineering_desktop.delete_after - expected) < timedelta(minutes=1)
    assert engineering_desktop.state == DesktopState.RUNNING  # held, not deleted yet
    assert finance_desktop.delete_after is None
    message = consoles.next()
    consoles.close()
    assert message["type"] == "console.terminate"


def test_coming_back_before_the_grace_period_ends_cancels_the_deletion(
        use_ldap, company, directory, django_capture_on_commit_callbacks):
    run_sync()
    bob = User.objects.get(username="bob")
    desktop = desktop_of(bob, company.eng_pool, company)
    directory.remove_value(group_dn("Engineering"), "member", user_dn("bob"))
    with django_capture_on_commit_callbacks(execute=True):
        run_sync()
    desktop.refresh_from_db()
    assert desktop.delete_after is not None

    directory.add_value(group_dn("Engineering"), "member", user_dn("bob"))
    with django_capture_on_commit_callbacks(execute=True):
        run_sync()

    desktop.refresh_from_db()
    assert desktop.delete_after is None


def test_a_user_gone_from_the_directory_loses_the_desktop_and_the_login(
        client, use_ldap, company, directory, django_capture_on_commit_callbacks):
    login(client, "alice")
    alice = User.objects.get(username="alice")
    desktop = desktop_of(alice, company.eng_pool, company)
    directory.remove_value(group_dn("Engineering"), "member", user_dn("alice"))
    directory.delete(user_dn("alice"))

    with django_capture_on_commit_callbacks(execute=True):
        run_sync()

    desktop.refresh_from_db()
    assert desktop.delete_after is not None and desktop.delete_after > timezone.now()
    response = client.get(reverse("portal:home"))  # her open login session ends with her account
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:login"))


def test_a_login_that_finds_a_group_gone_ends_access_too(client, use_ldap, company, directory,
                                                        django_capture_on_commit_callbacks):
    login(client, "bob")
    client.logout()
    bob = User.objects.get(username="bob")
    desktop = desktop_of(bob, company.eng_pool, company)
    directory.remove_value(group_dn("Engineering"), "member", user_dn("bob"))

    with django_capture_on_commit_callbacks(execute=True):
        login(client, "bob")

    desktop.refresh_from_db()
    assert group_names(bob) == {"Finance"} and desktop.delete_after is not None
