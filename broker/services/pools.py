"""Keeping each pool at its target: spares ready, never above the maximum, old images rolled
over, failed spares cleared, and a pool that keeps failing left alone for a while.

The target (how many spares, running or powered off) is the pool's capacity at that moment
(broker/capacity.py): its schedule's rule in force, or its own settings. Each pass moves the
pool towards it: surplus spares are deleted, missing ones cloned, spares of the wrong power
state started or shut down. Desktops a user has are never touched. The beat runs a pass every
VDI_RECONCILE_SECONDS (30), so a schedule boundary takes effect within that.
"""

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone

from .. import selectors
from ..capacity import Capacity, PoolCapacity
from ..models import BrokerEvent, Desktop, DesktopState, Pool
from .provisioning import new_desktop
from ..enqueue import enqueue_for_host

log = logging.getLogger(__name__)
S = DesktopState
STILL_A_SPARE = {"user__isnull": True}  # a transition's extra condition: nobody claimed it meanwhile


def reconcile_pool(*, pool_id: int, now: datetime | None = None) -> dict:
    """One pass over a pool at `now` (default: this moment); returns what it did (for the
    admin and the tests)."""
    now = now or timezone.now()
    pool = Pool.objects.select_related("image").get(pk=pool_id)
    if pool.is_farm:  # no spares or images: the periodic pass retries placement of waiting sessions
        from .farm_sessions import place_waiting_sessions

        return {"placed": place_waiting_sessions(pool_id=pool.pk)}
    done = {"created": 0, "rolled_over": 0, "cleared_failed": 0, "backing_off": False, "removed_surplus": 0,
            "powered_on": 0, "powered_off": 0}
    capacity = selectors.pool_capacity(pool=pool, now=now)
    _note_schedule_boundary(pool, capacity)
    version = pool.image.current_version()

    # Spares built from an older image version are replaced (floating and dedicated alike:
    # nobody has used them yet). Assigned floating desktops roll over at their next reset.
    if version is not None:
        for spare in selectors.spares_of(pool=pool).select_related("host").exclude(image_version=version).filter(
                state__in=(S.RUNNING, S.STOPPED)):
            if spare.transition(S.DELETING, expected={S.RUNNING, S.STOPPED}, where=STILL_A_SPARE,
                                message=f"spare rolled over to {version}"):
                enqueue_for_host("broker.tasks.delete_desktop_task", spare.pk, host=spare.host)
                done["rolled_over"] += 1

    # Failed spares count against the pool's health and are cleared out.
    for failed in Desktop.objects.filter(pool=pool, user__isnull=True, state=S.FAILED).select_related("host"):
        if failed.transition(S.DELETING, expected=S.FAILED, message="failed spare cleared by the pool"):
            enqueue_for_host("broker.tasks.delete_desktop_task", failed.pk, host=failed.host)
            done["cleared_failed"] += 1

    if pool.recompose_after and pool.recompose_after <= now:
        from .recompose import recompose_pool

        if Pool.objects.filter(pk=pool.pk, recompose_after=pool.recompose_after).update(recompose_after=None):
            done["recomposing"] = recompose_pool(pool=pool)
            BrokerEvent.objects.create(kind=BrokerEvent.Kind.POOL, pool=pool,
                                       message=f"maintenance window: recomposing {done['recomposing']} desktop(s)")
    if pool.backoff_until and pool.backoff_until > now:
        done["backing_off"] = True
    if pool.is_enabled:
        done.update(_keep_capacity(pool, version if not done["backing_off"] else None, capacity))
    Pool.objects.filter(pk=pool.pk).update(last_reconciled_at=now)
    return done


def _keep_capacity(pool: Pool, version, capacity: PoolCapacity) -> dict:
    """Clone missing spares (from `version`; None: create none), delete surplus ones, start or
    shut down spares whose power state is not the one wanted now."""
    with transaction.atomic():
        # Passes run from the beat and after every finished clone: one at a time per pool
        # (a row lock on PostgreSQL, the write lock on SQLite), so they never overshoot.
        Pool.objects.select_for_update().filter(pk=pool.pk).first()
        return {
            "created": _create_missing_spares(pool, version, spares=capacity.spares) if version else 0,
            "removed_surplus": _remove_surplus_spares(pool, capacity),
            **_power_spares(pool, capacity),
        }


def _create_missing_spares(pool: Pool, version, *, spares: int) -> int:
    missing = spares - selectors.spares_of(pool=pool).count()
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


def _remove_surplus_spares(pool: Pool, capacity: PoolCapacity) -> int:
    """Delete spares beyond the number wanted now: those of the wrong power state first, then
    the oldest. Spares still being built are left to finish; the next pass counts them."""
    surplus = selectors.spares_of(pool=pool).count() - capacity.spares
    if surplus <= 0:
        return 0
    wrong_state = S.STOPPED if capacity.powered_on else S.RUNNING
    candidates = (selectors.spares_of(pool=pool).filter(state__in=(S.RUNNING, S.STOPPED)).select_related("host")
                  .order_by(Case(When(state=wrong_state, then=Value(0)), default=Value(1),
                                 output_field=IntegerField()), "pk"))
    removed = 0
    for spare in candidates:
        if removed == surplus:
            break
        if spare.transition(S.DELETING, expected={S.RUNNING, S.STOPPED}, where=STILL_A_SPARE,
                            message=f"surplus spare removed: the pool keeps {capacity.spares} now "
                                    f"({capacity.current.source})"):
            enqueue_for_host("broker.tasks.delete_desktop_task", spare.pk, host=spare.host)
            removed += 1
    return removed


def _power_spares(pool: Pool, capacity: PoolCapacity) -> dict:
    """Start powered-off spares when spares should run (a few at a time per host, like
    clones: a boot storm slows every desktop on it), shut running ones down when they should
    not. Through the usual start and stop tasks."""
    why = capacity.current.source
    if capacity.powered_on:
        started = 0
        stopped_spares = selectors.spares_of(pool=pool).filter(
            state=S.STOPPED, host__is_enabled=True, host__is_online=True).select_related("host").order_by("pk")
        for spare in stopped_spares:
            if selectors.in_flight_on(host=spare.host) >= spare.host.max_parallel_provisioning:
                continue  # the next pass (or the refill after a start) continues
            if spare.transition(S.STARTING, expected=S.STOPPED, where=STILL_A_SPARE,
                                message=f"spare powered on ({why})"):
                enqueue_for_host("broker.tasks.start_desktop_task", spare.pk, host=spare.host)
                started += 1
        return {"powered_on": started}
    shut_down = 0
    for spare in selectors.spares_of(pool=pool).filter(state=S.RUNNING).select_related("host").order_by("pk"):
        if spare.transition(S.STOPPING, expected=S.RUNNING, where=STILL_A_SPARE,
                            message=f"spare powered off ({why})"):
            enqueue_for_host("broker.tasks.stop_desktop_task", spare.pk, host=spare.host)
            shut_down += 1
    return {"powered_off": shut_down}


def _note_schedule_boundary(pool: Pool, capacity: PoolCapacity) -> None:
    """When the schedule's rule in force changed since the last pass, write it down once: the
    pool remembers the rule it last applied, changed by compare-and-set, so of two passes at
    the same moment only one writes the event."""
    rule_id = capacity.rule.pk if capacity.rule else None
    previous_id = pool.schedule_rule_in_force_id  # None: the pool's own settings (or a deleted rule)
    if rule_id == previous_id:
        return
    if not Pool.objects.filter(pk=pool.pk, schedule_rule_in_force=previous_id).update(
            schedule_rule_in_force_id=rule_id):
        return  # another pass got there first
    before = pool.schedule_rule_in_force
    was = (Capacity(spares=before.min_spares, powered_on=before.spares_powered_on, rule=before) if before
           else Capacity(spares=pool.min_spares, powered_on=pool.spares_powered_on))
    if was.same_as(capacity.current):
        return  # another rule with the same numbers: nothing changes on the hosts
    then = f"; until {capacity.next_at_label}, then {capacity.next.label}" if capacity.next else ""
    BrokerEvent.objects.create(
        kind=BrokerEvent.Kind.POOL, pool=pool,
        message=f"capacity schedule: {capacity.current.label} ({capacity.current.source}); was {was.label}{then}")
