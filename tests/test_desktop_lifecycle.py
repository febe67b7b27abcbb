"""The desktop's states move only along the written transitions, by compare-and-set."""

import pytest

from broker.models import Desktop, DesktopEvent, DesktopState, IllegalTransition
from broker.models.desktops import ALLOWED_TRANSITIONS

S = DesktopState


@pytest.fixture
def desktop(pool, employee, host):
    return Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                  name="vditest-lifecycle")


def test_every_state_has_its_transitions_written_down():
    assert set(ALLOWED_TRANSITIONS) == set(S.values)
    for targets in ALLOWED_TRANSITIONS.values():
        assert targets <= set(S.values)


def test_it_moves_and_writes_an_event(desktop, employee):
    assert desktop.transition(S.CLONING, message="picked up", actor=employee)
    desktop.refresh_from_db()
    assert desktop.state == S.CLONING
    event = DesktopEvent.objects.get(desktop=desktop)
    assert (event.from_state, event.to_state, event.message, event.actor) == ("queued", "cloning", "picked up",
                                                                               employee)


def test_it_refuses_a_transition_that_is_not_written_down(desktop):
    with pytest.raises(IllegalTransition):
        desktop.transition(S.RUNNING)  # queued cannot jump to running
    desktop.refresh_from_db()
    assert desktop.state == S.QUEUED
    assert not DesktopEvent.objects.filter(desktop=desktop).exists()


def test_the_second_of_two_workers_loses(desktop):
    stale = Desktop.objects.get(pk=desktop.pk)
    assert desktop.transition(S.CLONING)
    assert stale.transition(S.CLONING) is False  # it still believes the desktop is queued
    assert DesktopEvent.objects.filter(desktop=desktop, to_state=S.CLONING).count() == 1


def test_extra_fields_are_written_in_the_same_update(desktop):
    desktop.transition(S.CLONING)
    desktop.transition(S.STARTING)
    desktop.transition(S.RUNNING, vnc_port=5901, spice_port=5902)
    desktop.refresh_from_db()
    assert (desktop.state, desktop.vnc_port, desktop.spice_port) == (S.RUNNING, 5901, 5902)


@pytest.mark.django_db(transaction=True)
def test_one_live_desktop_per_user_and_pool_is_enforced_by_the_database(desktop, pool, employee, host):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        Desktop.objects.create(pool=pool, user=employee, host=host, image_version=desktop.image_version,
                               name="vditest-second")
    # A deleted desktop does not count.
    Desktop.objects.filter(pk=desktop.pk).update(state=S.DELETED)
    Desktop.objects.create(pool=pool, user=employee, host=host, image_version=desktop.image_version,
                           name="vditest-third")
