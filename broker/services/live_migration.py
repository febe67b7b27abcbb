"""Moving running desktops between hypervisors by live migration: one desktop at an admin's
word, or every running desktop of a host being drained.

A move needs shared storage: the destination must be in the source's storage group (it sees
the same disk files). The guest keeps running, and its console keeps working, until the
switch-over; open consoles are told beforehand, and reconnect by themselves to the new host
with a fresh ticket afterwards. A move that fails leaves the desktop running where it was;
a drain then waits for its user to log off instead.
"""

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..console import control as console_control
from ..console.close_codes import CloseCode
from ..enqueue import enqueue_for_host
from ..hypervisor import DomainNotFound, HypervisorError, MigrationProgress, driver_for_host, driver_for_uri
from ..models import BrokerEvent, Desktop, DesktopState, Host, LiveMigration
from .. import selectors
from .hosts import set_host_maintenance
from .provisioning import desktop_nic, prepare_host_storage

log = logging.getLogger(__name__)
S = DesktopState
M = LiveMigration.State
# The driver cancels a move that has not finished by then (the reconciler judges a desktop
# stuck in `migrating` after 10 minutes: it must not see one that is still copying).
MIGRATION_TIMEOUT_S = 540


class CannotMigrate(Exception):
    """Why this desktop cannot move now (shown to the admin)."""


def possible_destinations(*, desktop: Desktop):
    """Hypervisors that see the same disks as the desktop's host, other than that host."""
    source = desktop.host
    if not source.storage_group:
        return Host.objects.none()
    return Host.objects.filter(kind=Host.Kind.HYPERVISOR, storage_group=source.storage_group).exclude(pk=source.pk)


def pick_destination(*, desktop: Desktop) -> Host | None:
    """The destination with the most room for the desktop, as placement would choose it."""
    return selectors.pick_host(pool=desktop.pool, among=possible_destinations(desktop=desktop))


def why_not_movable(*, desktop: Desktop, destination: Host | None = None) -> str | None:
    if desktop.host is None or desktop.host.is_session_host:
        return "a farm session cannot move; it ends when its user logs off"
    if desktop.state != S.RUNNING:
        return f"it is {desktop.get_state_display().lower()}, not running"
    if not desktop.host.storage_group:
        return f"{desktop.host} has no shared storage (no storage group)"
    if destination is not None:
        if destination.pk == desktop.host_id:
            return "it already runs there"
        if not desktop.host.shares_storage_with(destination):
            return f"{destination} does not see {desktop.host}'s disks (another storage group)"
        if not destination.accepts_new_desktops:
            return f"{destination} takes no new desktops (disabled, offline or draining)"
        return None
    if pick_destination(desktop=desktop) is None:
        return f"no other host of storage group {desktop.host.storage_group!r} has room"
    return None


def request_migration(*, desktop: Desktop, reason: str, actor=None, destination: Host | None = None) -> LiveMigration:
    """Queue a move of `desktop` (raises CannotMigrate with the reason). A desktop already
    waiting to move, or moving, returns that move."""
    why = why_not_movable(desktop=desktop, destination=destination)
    if why:
        raise CannotMigrate(f"{desktop.name} cannot move: {why}.")
    try:
        with transaction.atomic():
            migration = LiveMigration.objects.create(desktop=desktop, source=desktop.host, destination=destination,
                                                     reason=reason, requested_by=actor)
    except IntegrityError:
        return LiveMigration.objects.get(desktop=desktop, state__in=(M.QUEUED, M.RUNNING))
    who = actor.get_username() if actor else "the broker"
    desktop.note(f"move to {destination or 'another host'} requested by {who} ({migration.get_reason_display()})",
                 actor=actor)
    enqueue_for_host("broker.tasks.migrate_desktop_task", migration.pk, host=desktop.host)
    return migration


def drain_host(*, host: Host, actor=None, migrate: bool = True) -> dict:
    """Drain `host`: no new desktops; with `migrate`, every running desktop that can move is
    moved away by live migration, the others run on until their users log off."""
    set_host_maintenance(host=host, in_maintenance=True, actor=actor)
    moving, staying = [], []
    if migrate:
        for desktop in Desktop.objects.select_related("host", "pool").filter(host=host, state=S.RUNNING):
            try:
                request_migration(desktop=desktop, reason=LiveMigration.Reason.DRAIN, actor=actor)
                moving.append(desktop.name)
            except CannotMigrate as refused:
                staying.append(str(refused))
    if moving or staying:
        message = f"drain: {len(moving)} running desktop(s) moving away by live migration"
        if staying:
            message += f"; {len(staying)} wait for their users to log off: " + "; ".join(staying[:5])
        BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host, message=message[:2000])
    return {"moving": moving, "staying": staying}


def migrate_desktop(*, migration_id: int) -> LiveMigration | None:
    """Carry out a queued move (the source host's worker runs this)."""
    migration = LiveMigration.objects.select_related("desktop__host", "desktop__pool", "source", "destination") \
        .filter(pk=migration_id).first()
    if migration is None or migration.is_finished:
        return migration
    desktop = migration.desktop
    if migration.state == M.RUNNING:
        # A worker died in the middle of this move and the task came back: see where it landed.
        return settle_interrupted_migration(desktop_id=desktop.pk)
    if desktop.host_id != migration.source_id:
        return _finish(migration, M.CANCELLED, "the desktop no longer runs on the source host")
    destination = migration.destination
    why = why_not_movable(desktop=desktop, destination=destination)
    if why:
        return _finish(migration, M.CANCELLED if desktop.state != S.RUNNING else M.FAILED, why)
    destination = destination or pick_destination(desktop=desktop)
    if destination is None:
        return _finish(migration, M.FAILED, f"no other host of storage group {desktop.host.storage_group!r} has room")
    source = desktop.host
    if not desktop.transition(S.MIGRATING, expected=S.RUNNING, message=f"moving from {source} to {destination}"):
        return _finish(migration, M.CANCELLED, "the desktop stopped running before the move began")
    LiveMigration.objects.filter(pk=migration.pk).update(state=M.RUNNING, destination=destination,
                                                         started_at=timezone.now())
    console_control.send_to_group(console_control.desktop_group(desktop.pk), {
        "type": "console.moving",
        "text": "Your desktop is moving to another server. The console pauses for a moment and reconnects by itself.",
    })
    started = timezone.now()
    try:
        prepare_host_storage(destination)  # later operations there find the pools
        destination_driver = driver_for_uri(destination.reachable_uri)
        driver_for_host(source).migrate_domain(
            desktop.name, destination=destination_driver, destination_nic=_nic_on(desktop, destination,
                                                                                  destination_driver),
            address=destination.migration_address or None, timeout_s=MIGRATION_TIMEOUT_S,
            on_progress=lambda progress: _save_progress(migration.pk, progress))
    except HypervisorError as exc:
        log.warning("moving %s from %s to %s failed: %s", desktop.name, source, destination, exc)
        desktop.transition(S.RUNNING, expected=S.MIGRATING, message=f"move to {destination} failed; it runs on "
                                                                    f"{source}: {exc}")
        console_control.show_notice(group=console_control.desktop_group(desktop.pk),
                                    text="The move was cancelled: your desktop stays where it is.")
        return _finish(migration, M.FAILED, str(exc))
    return _arrived(migration, desktop, source, destination, seconds=(timezone.now() - started).total_seconds())


def _nic_on(desktop: Desktop, host: Host, driver):
    """The desktop's network card as `host` names the pool's network."""
    import copy

    there = copy.copy(desktop)
    there.host = host
    return desktop_nic(there, driver=driver)


def _arrived(migration: LiveMigration, desktop: Desktop, source: Host, destination: Host, *,
             seconds: float | None = None) -> LiveMigration:
    ports = driver_for_uri(destination.reachable_uri).graphics_ports(desktop.name)
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    desktop.transition(S.RUNNING, expected=S.MIGRATING, message=f"moved from {source} to {destination}{took}",
                       host=destination, vnc_port=ports.vnc, spice_port=ports.spice)
    finished = _finish(migration, M.COMPLETED, "")
    # The old console connections ended with the old QEMU: the pages reconnect to the new host.
    console_control.close_consoles(group=console_control.desktop_group(desktop.pk), code=CloseCode.RECONNECT,
                                   reason="Your desktop moved to another server; reconnecting.")
    return finished


def settle_interrupted_migration(*, desktop_id: int) -> LiveMigration | None:
    """A desktop left in `migrating` (its worker died, or the reconciler found it stuck): ask
    both hosts where the guest runs and make the books say so. Never starts or keeps two
    copies: an incomplete copy on the destination is removed."""
    desktop = Desktop.objects.select_related("host").filter(pk=desktop_id).first()
    migration = LiveMigration.objects.select_related("source", "destination") \
        .filter(desktop_id=desktop_id, state__in=(M.QUEUED, M.RUNNING)).first()
    if desktop is None or desktop.state != S.MIGRATING:
        return migration and _finish(migration, M.CANCELLED, "the desktop is no longer moving")
    source = desktop.host
    destination = migration.destination if migration else None
    on_source = _state_on(source, desktop.name)
    on_destination = _state_on(destination, desktop.name) if destination else None
    if on_destination == "running" and on_source in (None, "shutoff"):
        if migration is None:
            migration = LiveMigration.objects.create(desktop=desktop, source=source, destination=destination,
                                                     reason=LiveMigration.Reason.ADMIN, state=M.RUNNING)
        if on_source == "shutoff":
            driver_for_host(source).undefine_domain(desktop.name)
        return _arrived(migration, desktop, source, destination)
    if on_destination is not None:
        driver_for_uri(destination.reachable_uri).undefine_domain(desktop.name)  # an incomplete incoming copy
    if on_source in ("running", "paused"):
        desktop.transition(S.RUNNING, expected=S.MIGRATING,
                           message=f"the move was interrupted; it runs on {source} as before")
        return migration and _finish(migration, M.FAILED, "interrupted (its worker stopped); the desktop stayed")
    desktop.transition(S.FAILED, expected=S.MIGRATING, message="lost during an interrupted move",
                       last_error="its virtual machine was lost while moving to another host")
    return migration and _finish(migration, M.FAILED, "interrupted; the guest runs on neither host")


def _state_on(host: Host, name: str) -> str | None:
    try:
        return driver_for_uri(host.reachable_uri).domain_info(name).state
    except DomainNotFound:
        return None


def _save_progress(migration_id: int, progress: MigrationProgress) -> None:
    LiveMigration.objects.filter(pk=migration_id, state=M.RUNNING).update(
        data_total_bytes=progress.data_total_bytes, data_processed_bytes=progress.data_processed_bytes)


def _finish(migration: LiveMigration, state: str, error: str) -> LiveMigration:
    LiveMigration.objects.filter(pk=migration.pk, state__in=(M.QUEUED, M.RUNNING)).update(
        state=state, error=error[:2000], finished_at=timezone.now())
    migration.refresh_from_db()
    if state != M.COMPLETED:
        BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=migration.source,
                                   message=f"{migration.desktop.name} did not move: {error}"[:2000])
    return migration


def start_drain(*, host: Host, actor=None, migrate: bool = True):
    """A drain as a job: the admin watches the running desktops move away, one bar for all."""
    from .jobs import start_job

    return start_job(kind="host_drain", target_key=f"host:{host.pk}", target_label=host.name, started_by=actor,
                     params={"host_id": host.pk, "migrate": migrate})


def drain_job(job, progress):
    """Job runner: the first look drains the host (maintenance, a move asked for each running
    desktop that can move); each later look counts the moves that ended. Stopping cancels the
    moves still waiting (those copying finish); the host stays in maintenance."""
    from .jobs import FollowUp, cancelled, remember, succeeded

    host = Host.objects.filter(pk=job.params["host_id"]).first()
    if host is None:
        return cancelled(None, "the host was deleted")
    if "migration_ids" not in job.params:
        drained = drain_host(host=host, actor=job.started_by, migrate=job.params.get("migrate", True))
        ids = list(LiveMigration.objects.filter(source=host, desktop__name__in=drained["moving"],
                                                state__in=(M.QUEUED, M.RUNNING)).values_list("pk", flat=True))
        remember(job, migration_ids=ids, staying=drained["staying"])
    ids = job.params["migration_ids"]
    if progress.stop_requested():
        LiveMigration.objects.filter(pk__in=ids, state=M.QUEUED).update(
            state=M.CANCELLED, error="the drain was stopped by an admin", finished_at=timezone.now())
    moves = list(LiveMigration.objects.filter(pk__in=ids).select_related("desktop"))
    ended = [move for move in moves if move.is_finished]
    progress.step(done=len(ended), total=len(ids), force=True, may_stop=False,
                  message=f"{host.name} in maintenance; {len(ended)} of {len(ids)} move(s) ended")
    if len(ended) < len(moves):
        return FollowUp(seconds=2)
    result = {"host": host.name, "moved": [m.desktop.name for m in moves if m.state == M.COMPLETED],
              "failed": [{"desktop": m.desktop.name, "error": m.error[:500]} for m in moves if m.state == M.FAILED],
              "cancelled": [m.desktop.name for m in moves if m.state == M.CANCELLED],
              "staying": job.params.get("staying", [])}
    if progress.stop_requested():
        return cancelled(result, f"stopped: {len(result['moved'])} moved, {len(result['cancelled'])} not moved")
    return succeeded(result, f"{len(result['moved'])} moved, {len(result['failed'])} failed, "
                             f"{len(result['staying'])} wait for their users to log off")
