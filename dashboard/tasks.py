"""Thin periodic tasks of the dashboard (celery beat: config/settings.py CELERY_BEAT_SCHEDULE)."""

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def take_dashboard_sample_task():
    """A sample of the site, the hour roll-up and pruning; then each hypervisor host is read
    through its own driver (on its agent's queue where it has one)."""
    from django.conf import settings

    from broker.enqueue import enqueue_for_host
    from broker.models import Host
    from config.celery import app

    from .services.samples import prune, roll_up_hours, take_sample

    try:
        workers = list(app.control.inspect(timeout=settings.VDI_READYZ_TIMEOUT_SECONDS).ping() or {})
    except Exception as exc:  # the broker is away: the sample says "not asked"
        log.info("no worker ping for the dashboard sample: %s", exc)
        workers = None
    take_sample(workers=workers)
    roll_up_hours()
    prune()
    for host in Host.objects.filter(kind=Host.Kind.HYPERVISOR, is_enabled=True):
        enqueue_for_host("dashboard.tasks.read_host_usage_task", host.pk, host=host,
                         expires=settings.VDI_DASHBOARD_SAMPLE_SECONDS)


@shared_task(ignore_result=True)
def read_host_usage_task(host_id: int):
    from broker.models import Host

    from .services.samples import record_host_reading

    host = Host.objects.filter(pk=host_id, kind=Host.Kind.HYPERVISOR).first()
    if host is not None:  # removed since: nothing to read
        record_host_reading(host=host)
