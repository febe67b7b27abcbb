"""Console tickets live seconds; the beat removes their rows an hour after they expired, so the
ticket table does not grow by a row per console for ever."""

from datetime import timedelta

import pytest
from celery import current_app
from django.conf import settings
from django.utils import timezone

from broker.console.tickets import issue_console_ticket
from broker.models import ConsoleTicket, Desktop, DesktopState

pytestmark = pytest.mark.django_db


def test_the_beat_removes_tickets_expired_over_an_hour_ago(pool, employee, host):
    desktop = Desktop.objects.create(pool=pool, user=employee, host=host, image_version=pool.image.current_version(),
                                     name="vditest-purge", state=DesktopState.RUNNING, vnc_port=5999)
    for _ in range(3):
        issue_console_ticket(user=employee, session_key="k" * 32, desktop=desktop, protocol="vnc",
                             origin="http://127.0.0.1")
    old, recent, fresh = ConsoleTicket.objects.order_by("pk")
    ConsoleTicket.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(hours=2))
    ConsoleTicket.objects.filter(pk=recent.pk).update(expires_at=timezone.now() - timedelta(minutes=10))

    entries = [entry for entry in settings.CELERY_BEAT_SCHEDULE.values()
               if entry["task"] == "broker.tasks.purge_expired_console_tickets_task"]
    assert entries, "no beat entry runs the ticket purge"
    assert entries[0]["schedule"] <= 3600
    current_app.tasks[entries[0]["task"]].apply().get()

    assert set(ConsoleTicket.objects.values_list("pk", flat=True)) == {recent.pk, fresh.pk}
