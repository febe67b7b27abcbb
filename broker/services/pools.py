"""Keeping each pool at its target: spares ready, never above the maximum, old images rolled
over, failed spares cleared, and a pool that keeps failing left alone for a while."""

import logging

from django.db import transaction
from django.utils import timezone

from .. import selectors
from ..models import BrokerEvent, Desktop, DesktopState, Pool
from .provisioning import new_desktop
from ..enqueue import enqueue_for_host

log = logging.getLogger(__name__)
S = DesktopState


def reconcile_pool(*, pool_id: int) -> dict:
    """One pass over a pool; returns what it did (for the admin and the tests)."""

    pool = Pool.objects.select_related("image").get(pk=pool_id)
    if pool.is_farm:  # no spares or images: the periodic pass retries placement of waiting sessions
        from .farm_sessions import place_waiting_sessions

        return {"placed": place_waiting_sessions(pool_id=pool.pk)}
    done = {"created": 0, "rolled_over": 0, "cleared_failed": 0, "backing_off": False}
    version = pool.image.current_version()

    # Spares built from an older image version are replaced (floating and dedicated alike:
    # nobody has used them yet). Assigned floating desktops roll over at their next reset.
    if version is not None:
        for spare in selectors.spares_of(pool=pool).select_related("host").exclude(image_version=version).filter(
                state__in=(S.RUNNING, S.STOPPED)):
            if spare.transition(S.DELETING, expected={S.RUNNING, S.STOPPED},
                                message=f"spare rolled over to {version}"):
                enqueue_for_host("broker.tasks.delete_desktop_task", spare.pk, host=spare.host)
                done["rolled_over"] += 1

    # Failed spares count against the pool's health and are cleared out.
    for failed in Desktop.objects.filter(pool=pool, user__isnull=True, state=S.FAILED).select_related("host"):
        if failed.transition(S.DELETING, expected=S.FAILED, message="failed spare cleared by the pool"):
            enqueue_for_host("broker.tasks.delete_desktop_task", failed.pk, host=failed.host)
            done["cleared_failed"] += 1

    now = timezone.now()
    if pool.recompose_after and pool.recompose_after <= now:
        from .recompose import recompose_pool

        if Pool.objects.filter(pk=pool.pk, recompose_after=pool.recompose_after).update(recompose_after=None):
            done["recomposing"] = recompose_pool(pool=pool)
            BrokerEvent.objects.create(kind=BrokerEvent.Kind.POOL, pool=pool,
                                       message=f"maintenance window: recomposing {done['recomposing']} desktop(s)")
    if pool.backoff_until and pool.backoff_until > now:
        done["backing_off"] = True
    elif pool.is_enabled and version is not None:
        done["created"] = _top_up_spares(pool, version)
    Pool.objects.filter(pk=pool.pk).update(last_reconciled_at=now)
    return done


def _top_up_spares(pool: Pool, version) -> int:
    with transaction.atomic():
        # Passes run from the beat and after every finished clone: one at a time per pool
        # (a row lock on PostgreSQL, the write lock on SQLite), so they never overshoot.
        Pool.objects.select_for_update().filter(pk=pool.pk).first()
        return _create_missing_spares(pool, version)


def _create_missing_spares(pool: Pool, version) -> int:

    missing = pool.min_spares - selectors.spares_of(pool=pool).count()
    room = pool.max_desktops - selectors.live_count(pool=pool)
    created = 0
    for _ in range(max(0, min(missing, room))):
        host = selectors.pick_host(pool=pool)
        if host is None:
            BrokerEvent.objects.create(kind=BrokerEvent.Kind.POOL, pool=pool,
                                       message="no host has room for another spare")
            break
        if selectors.in_flight_on(host=host) >= host.max_parallel_provisioning:
            break  # the next pass continues once some clones have finished
        with transaction.atomic():
            desktop = new_desktop(pool=pool, host=host, version=version)
            desktop.note(f"spare created on {host.name} from {version}")
            enqueue_for_host("broker.tasks.provision_desktop_task", desktop.pk, host=host)
        created += 1
    return created
