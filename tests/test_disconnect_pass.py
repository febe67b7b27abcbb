"""The periodic disconnect pass finds the desktops left disconnected past their pool's timeout
and the farm sessions whose console closed for idleness, with as many queries for 50 running
desktops as for 5: it runs at every beat, on sites with thousands of them (bench/scale.py)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from broker.console.close_codes import CloseCode
from broker.models import ConsoleSession, Desktop, DesktopState, GoldenImage, GoldenImageVersion, Host, Pool
from broker.services.desktop_sessions import desktops_disconnected_too_long, farm_sessions_left_idle

pytestmark = pytest.mark.django_db
S = DesktopState


@pytest.fixture
def site(db):
    image = GoldenImage.objects.create(name="img", display_name="Image")
    version = GoldenImageVersion.objects.create(image=image, number=1, path="/images/img.qcow2")
    host = Host.objects.create(name="hv", libvirt_uri="qemu:///system")
    pool = Pool.objects.create(name="desk", display_name="Desk", image=image, disconnect_timeout_minutes=30)
    farm = Pool.objects.create(name="farm", display_name="Farm", kind=Pool.Kind.FARM)
    return {"version": version, "host": host, "pool": pool, "farm": farm, "now": timezone.now()}


def desktop(site, django_user_model, name, *consoles, state=S.RUNNING, pool=None, user=True,
            assigned_ago=timedelta(hours=3)):
    """A desktop (or, in the farm, a session) assigned and in `state` since `assigned_ago`, with
    consoles: dicts of ConsoleSession fields, opened in the order given."""
    pool = pool or site["pool"]
    owner = django_user_model.objects.create_user(name) if user else None
    vm = pool.kind != Pool.Kind.FARM
    since = site["now"] - assigned_ago
    made = Desktop.objects.create(pool=pool, user=owner, name=name, state=state, assigned_at=since,
                                  state_changed_at=since, host=site["host"] if vm else None,
                                  image_version=site["version"] if vm else None)
    for order, fields in enumerate(consoles):
        console = ConsoleSession.objects.create(user=owner or django_user_model.objects.create_user(f"{name}-{order}"),
                                                desktop=made, protocol="vnc", **fields)
        ConsoleSession.objects.filter(pk=console.pk).update(  # auto_now_add on create
            opened_at=site["now"] - timedelta(hours=3) + timedelta(minutes=order))
    return made


def ago(site, **delta):
    return site["now"] - timedelta(**delta)


def test_it_picks_the_desktops_left_disconnected_past_the_timeout(site, django_user_model):
    def make(name, *consoles, **kwargs):
        desktop(site, django_user_model, name, *consoles, **kwargs)

    make("away", {"closed_at": ago(site, minutes=40)}, {"closed_at": ago(site, minutes=35)})
    make("back-soon", {"closed_at": ago(site, minutes=40)}, {"closed_at": ago(site, minutes=10)})
    make("connected", {"closed_at": ago(site, minutes=40)}, {"last_input_at": ago(site, minutes=50)})
    make("never-connected", assigned_ago=timedelta(hours=2))
    make("just-assigned", assigned_ago=timedelta(minutes=1))
    # Its gateway died an hour ago without closing it: not connected.
    make("gateway-died", {"closed_at": ago(site, minutes=40)}, {"last_seen_at": ago(site, hours=1)})
    make("spare", {"closed_at": ago(site, minutes=40)}, user=False)
    make("powered-off", {"closed_at": ago(site, minutes=40)}, state=S.STOPPED)
    no_timeout = Pool.objects.create(name="kiosk", display_name="Kiosk", image=site["pool"].image,
                                     disconnect_timeout_minutes=None)
    make("no-timeout", {"closed_at": ago(site, minutes=40)}, pool=no_timeout)

    found = {d.name for d in desktops_disconnected_too_long(now=site["now"])}
    assert found == {"away", "never-connected", "gateway-died"}


def test_it_picks_the_farm_sessions_whose_last_console_closed_for_idleness(site, django_user_model):
    idle, normal = {"closed_at": ago(site, minutes=5), "close_code": CloseCode.IDLE_TIMEOUT}, \
        {"closed_at": ago(site, minutes=5), "close_code": 1000}

    def make(name, *consoles, **kwargs):
        desktop(site, django_user_model, name, *consoles, pool=site["farm"], **kwargs)

    make("idle", normal, idle)
    make("came-back", idle, {})  # a console opened since, still open
    make("left-normally", idle, normal)
    make("idle-but-another-open", {}, idle)  # an older console is still open
    make("no-console")
    make("ended", normal, idle, state=S.DELETING)

    assert {s.name for s in farm_sessions_left_idle(now=site["now"])} == {"idle"}


def queries_of_the_pass(now) -> int:
    with CaptureQueriesContext(connection) as captured:
        list(desktops_disconnected_too_long(now=now))
        list(farm_sessions_left_idle(now=now))
    return len(captured.captured_queries)


def test_the_pass_runs_as_many_queries_with_50_running_desktops_as_with_5(site, django_user_model):
    def add(start, stop):
        for n in range(start, stop):  # all at work: the pass finds nothing to do, as mostly
            desktop(site, django_user_model, f"desk-{n}", {"closed_at": ago(site, hours=2)}, {})
            desktop(site, django_user_model, f"session-{n}", {"closed_at": ago(site, hours=2)}, {},
                    pool=site["farm"])

    add(0, 5)
    few = queries_of_the_pass(site["now"])
    add(5, 50)
    assert queries_of_the_pass(site["now"]) == few
