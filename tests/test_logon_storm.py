"""A logon storm on PostgreSQL: 150 users press Launch (twice each) at once against a floating
pool with fewer spares than users, served by 40 concurrent workers (what 4 ASGI servers with
10 threads each give; PostgreSQL here allows 100 connections in all). No desktop goes to two
users, no user gets two desktops, the pool never grows past its maximum, and everyone who is
refused is told why."""

import threading
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from broker.models import Desktop, DesktopState, Entitlement, Pool
from broker.models.desktops import LIVE_STATES
from broker.services.assignment import launch_desktop
from broker.services.errors import LaunchRefused

S = DesktopState
USERS = 150
WORKERS = 40
SPARES = 30
MAX_DESKTOPS = 60


@pytest.mark.django_db(transaction=True)
def test_a_logon_storm_never_double_assigns(image, host, employees_group):
    if connection.vendor != "postgresql":
        pytest.fail("this test must run on PostgreSQL (make test sets DATABASE_URL)")
    pool = Pool.objects.create(name="storm", display_name="Storm", image=image, kind=Pool.Kind.FLOATING,
                               min_spares=SPARES, max_desktops=MAX_DESKTOPS)
    Entitlement.objects.create(pool=pool, group=employees_group)
    version = image.current_version()
    for n in range(SPARES):  # ready spares (rows only: this test is about assignment, not VMs)
        Desktop.objects.create(pool=pool, host=host, image_version=version, state=S.RUNNING,
                               name=f"vditest-storm-spare-{n}")
    users = []
    for n in range(USERS):
        user = get_user_model().objects.create_user(f"storm{n}")
        user.groups.add(employees_group)
        users.append(user)

    results, refusals, errors = {}, {}, []
    start = threading.Event()

    def launch(user):
        try:
            start.wait()
            # Each user presses Launch twice, as impatient users do.
            first = launch_desktop(user=user, pool=pool)
            second = launch_desktop(user=user, pool=pool)
            assert first.pk == second.pk
            results[user.pk] = first.pk
        except LaunchRefused as refused:
            refusals[user.pk] = str(refused)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        finally:
            connection.close()  # each launch is its own request: its own connection

    # Provisioning tasks are not sent: no worker should boot 30 VMs for this test.
    with mock.patch("broker.services.assignment._enqueue"), ThreadPoolExecutor(WORKERS) as workers:
        futures = [workers.submit(launch, user) for user in users]
        start.set()
        for future in futures:
            future.result(timeout=120)

    assert errors == []
    assert len(results) + len(refusals) == USERS
    assert len(set(results.values())) == len(results), "a desktop went to two users"
    live = Desktop.objects.filter(pool=pool, state__in=LIVE_STATES)
    assert live.count() <= MAX_DESKTOPS
    assert len(results) == MAX_DESKTOPS  # every desktop the pool may have went to someone
    for desktop in live:
        assert desktop.user_id is not None and results[desktop.user_id] == desktop.pk
    assert all("are in use" in message for message in refusals.values())
    claimed_spares = live.filter(name__startswith="vditest-storm-spare-").count()
    assert claimed_spares == SPARES  # spares went first, then new desktops up to the maximum
