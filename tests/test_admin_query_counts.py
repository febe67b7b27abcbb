"""The admin's pool, host and desktop lists run as many SQL queries with 50 desktops as with 5.

A column or a filter that asks the database once per row (an N+1) makes these pages slow on a
site with thousands of desktops (bench/scale.py); counting queries catches it without timing.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from broker.models import (
    ConsoleSession,
    Desktop,
    DesktopState,
    GoldenImage,
    GoldenImageVersion,
    Host,
    Pool,
    PublishedApp,
)
from tests.support.mfa import verified_session

pytestmark = pytest.mark.django_db
PAGES = ["pool", "host", "desktop"]


@pytest.fixture
def admin(client, django_user_model):
    verified_session(client, django_user_model.objects.create_superuser("root", password="admin-pass-1"))
    return client


def add_desktops(django_user_model, start: int, stop: int) -> None:
    """Desktops start..stop-1; every five of them on a new host, in new pools (a VM pool on its
    own image version, and a farm with a session host and a published application), with their
    own users, in every console situation the "Idle" column tells apart."""
    now = timezone.now()
    for group in range(start // 5, (stop + 4) // 5):
        image = GoldenImage.objects.create(name=f"img-{group}", display_name=f"Image {group}")
        version = GoldenImageVersion.objects.create(image=image, number=1, path=f"/images/{group}.qcow2")
        host = Host.objects.create(name=f"hv-{group}", libvirt_uri="qemu:///system", cpus=8, memory_mib=16384)
        kind = Pool.Kind.DEDICATED if group % 2 == 0 else Pool.Kind.FLOATING
        pool = Pool.objects.create(name=f"pool-{group}", display_name=f"Pool {group}", kind=kind, image=image,
                                   min_spares=1)
        farm = Pool.objects.create(name=f"farm-{group}", display_name=f"Farm {group}", kind=Pool.Kind.FARM)
        Host.objects.create(name=f"sh-{group}", kind=Host.Kind.SESSION_HOST, farm=farm)
        app = PublishedApp.objects.create(pool=farm, name="xterm", display_name="Terminal", command="xterm")
        for number in range(max(start, group * 5), min(stop, group * 5 + 5)):
            user = django_user_model.objects.create_user(f"user-{number}")
            if number % 5 == 4:
                desktop = Desktop.objects.create(pool=farm, user=user, application=app, name=f"session-{number}",
                                                 state=DesktopState.RUNNING)
            else:
                desktop = Desktop.objects.create(
                    pool=pool, user=user if number % 5 else None, host=host, image_version=version,
                    name=f"desktop-{number}", state=DesktopState.RUNNING if number % 5 < 3 else DesktopState.STOPPED,
                    assigned_at=now)
            if number % 3 == 0:  # at work in it
                ConsoleSession.objects.create(user=user, desktop=desktop, protocol="vnc",
                                              last_input_at=now - timedelta(minutes=5))
            elif number % 3 == 1:  # disconnected
                ConsoleSession.objects.create(user=user, desktop=desktop, protocol="vnc",
                                              closed_at=now - timedelta(minutes=3))


def queries_for(client, page: str) -> tuple[int, int]:
    """(SQL queries, rows listed) of one GET of the page."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(f"admin:broker_{page}_changelist"))
    assert response.status_code == 200
    return len(captured.captured_queries), response.context["cl"].result_count


@pytest.mark.parametrize("page", PAGES)
def test_a_list_page_runs_as_many_queries_with_50_desktops_as_with_5(admin, django_user_model, page):
    add_desktops(django_user_model, 0, 5)
    admin.get(reverse(f"admin:broker_{page}_changelist"))  # first-request caches (content types)
    small, small_rows = queries_for(admin, page)
    add_desktops(django_user_model, 5, 50)
    large, large_rows = queries_for(admin, page)
    assert large_rows > small_rows  # the page did list the new rows
    assert large == small, f"{page} list: {small} queries for {small_rows} rows, {large} for {large_rows}"


def test_the_idle_column_reads_each_desktops_consoles(admin, django_user_model):
    now = timezone.now()
    image = GoldenImage.objects.create(name="img", display_name="Image")
    version = GoldenImageVersion.objects.create(image=image, number=1, path="/images/img.qcow2")
    host = Host.objects.create(name="hv", libvirt_uri="qemu:///system")
    pool = Pool.objects.create(name="desk", display_name="Desk", image=image)

    def desktop(name, state=DesktopState.RUNNING, *consoles, assigned_ago=timedelta(0)):
        user = django_user_model.objects.create_user(name)
        desktop = Desktop.objects.create(pool=pool, user=user, host=host, image_version=version, name=name,
                                         state=state, assigned_at=now - assigned_ago)
        for fields in consoles:
            opened_at = fields.pop("opened_at", None)
            console = ConsoleSession.objects.create(user=user, desktop=desktop, protocol="vnc", **fields)
            if opened_at:  # auto_now_add on create
                ConsoleSession.objects.filter(pk=console.pk).update(opened_at=opened_at)

    def ago(**delta):  # and 10 s more: past the minute boundary, whatever the test's own pace
        return now - timedelta(**delta) - timedelta(seconds=10)

    desktop("active", DesktopState.RUNNING, {"last_input_at": now - timedelta(seconds=5)})
    desktop("idle", DesktopState.RUNNING, {"last_input_at": ago(minutes=5)}, {"closed_at": ago(minutes=1)})
    desktop("watching", DesktopState.RUNNING, {"last_input_at": None, "opened_at": ago(minutes=2)})
    desktop("away", DesktopState.RUNNING, {"closed_at": ago(minutes=3)}, {"closed_at": ago(minutes=50)})
    desktop("never", DesktopState.RUNNING, assigned_ago=timedelta(hours=2, seconds=10))
    # A console whose gateway died an hour ago does not count as connected.
    desktop("orphaned", DesktopState.RUNNING, {"last_seen_at": ago(hours=1)}, {"closed_at": ago(minutes=7)})
    desktop("off", DesktopState.STOPPED, {"last_input_at": ago(minutes=5)})

    changelist = admin.get(reverse("admin:broker_desktop_changelist")).context["cl"]
    idle = {d.name: changelist.model_admin.idle(d) for d in changelist.result_list}
    assert idle == {
        "active": "active",
        "idle": "5\xa0minutes",
        "watching": "2\xa0minutes",
        "away": "disconnected 3\xa0minutes",
        "never": "disconnected 2\xa0hours",
        "orphaned": "disconnected 7\xa0minutes",
        "off": "-",
    }
