"""Hosts: is each one answering, how big is it, and does what it runs match the broker's books.

`reconcile_host` compares the database with the host's libvirt: domains and volumes carrying
the broker's name prefix that no desktop owns (left by a crash) are removed; desktops whose
domain vanished are marked failed (a spare is then replaced by its pool; a user's desktop is
rebuilt at their next launch, keeping its data disk if that survived); desktops stuck in a
transitional state are retried, then failed; a desktop queued for long is sent its task again
(lost with a Redis restart). Every action is an event row.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ..hypervisor import HostUnreachable, driver_for_host
from ..models import BrokerEvent, Desktop, DesktopState, Host
from ..models.desktops import TRANSITIONAL_STATES
from ..enqueue import enqueue_after_commit, enqueue_for_host

log = logging.getLogger(__name__)
S = DesktopState
STUCK_AFTER = timedelta(minutes=10)
RESTORE_STUCK_AFTER = timedelta(minutes=75)
MAX_PROVISIONING_ATTEMPTS = 3


def check_host(*, host_id: int) -> Host:
    """Ask the host for its size; mark it online or offline (with an event on each change)."""
    host = Host.objects.get(pk=host_id)
    if host.is_session_host:
        # No libvirt there: its agent reports (broker/session_agent.py); ask it for a report now.
        enqueue_after_commit("broker.session_tasks.report_session_host_task", host.pk, queue=host.agent_queue,
                             expires=settings.VDI_SESSION_HOST_REPORT_SECONDS)
        return host
    now = timezone.now()
    try:
        capacity = driver_for_host(host).host_capacity()
    except HostUnreachable as exc:
        if Host.objects.filter(pk=host.pk, is_online=True).update(is_online=False, last_error=str(exc),
                                                                   last_checked_at=now, offline_since=now):
            BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host,
                                       message=f"host went offline: {exc}")
        else:
            Host.objects.filter(pk=host.pk).update(last_error=str(exc), last_checked_at=now)
        return Host.objects.get(pk=host.pk)
    if Host.objects.filter(pk=host.pk, is_online=False).update(is_online=True, offline_since=None):
        BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host, message="host is back online")
    Host.objects.filter(pk=host.pk).update(cpus=capacity.cpus, memory_mib=capacity.memory_mib, last_error="",
                                           last_checked_at=now)
    return Host.objects.get(pk=host.pk)


def set_host_maintenance(*, host: Host, in_maintenance: bool, actor=None) -> bool:
    """Drain a host (no new desktops; running ones stay) or end its maintenance. Returns False
    if it already was in that state."""
    if not Host.objects.filter(pk=host.pk, in_maintenance=not in_maintenance).update(in_maintenance=in_maintenance):
        return False
    who = actor.get_username() if actor else "the broker"
    BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host,
                               message=f"{'drained' if in_maintenance else 'maintenance ended'} by {who}")
    return True


def reconcile_host(*, host_id: int, now=None) -> dict:
    host = Host.objects.get(pk=host_id)
    now = now or timezone.now()
    driver = driver_for_host(host)
    prefix = settings.VDI_NAME_PREFIX
    done = {"orphan_domains": [], "stale_copies": [], "orphan_volumes": [], "vanished": [], "powered_off": [], "retried": [],
            "failed": []}

    queued_retry_after = timedelta(seconds=settings.VDI_QUEUED_RETRY_SECONDS)
    desktops = {d.name: d for d in Desktop.objects.filter(host=host).exclude(state=S.DELETED)}
    # Rows created but not yet committed by another process could look like orphans for a
    # moment: only judge domains and volumes against rows that exist now AND recent creations.
    recently_created = set(Desktop.objects.filter(created_at__gte=now - timedelta(minutes=2))
                           .values_list("name", flat=True))
    domains = {d.name: d for d in driver.list_domains()}

    strangers = [name for name in domains if name.startswith(prefix) and name not in desktops]
    # A domain of a desktop that lives on another host: arriving there by live migration right
    # now (leave it), or a stale copy on a host that came back after its desktops were
    # restarted elsewhere (destroy it: never two copies running; the disks are not touched).
    elsewhere = dict(Desktop.objects.filter(name__in=strangers).exclude(state=S.DELETED)
                     .values_list("name", "state"))
    for name in sorted(strangers):
        if elsewhere.get(name) == S.MIGRATING:
            continue
        if name in elsewhere:
            driver.undefine_domain(name)
            done["stale_copies"].append(name)
            _event(host, f"destroyed a stale copy of {name}: that desktop runs on another host now")
        elif name not in recently_created:
            driver.undefine_domain(name)
            done["orphan_domains"].append(name)
            _event(host, f"removed orphan domain {name} (no desktop owns it)")

    volumes = [name for name in driver.list_volume_names(pool=host.storage_pool) if name.startswith(prefix)]
    owned_volumes = {f"{d.name}.qcow2" for d in desktops.values()} | {d.data_volume_name for d in desktops.values()}
    owned_volumes |= _owned_volume_names(set(volumes) - owned_volumes)
    for volume in volumes:
        base = volume.removesuffix(".qcow2").removesuffix("-data")
        if volume not in owned_volumes and base not in recently_created:
            driver.delete_volume(pool=host.storage_pool, name=volume)
            done["orphan_volumes"].append(volume)
            _event(host, f"removed orphan volume {volume}")

    for desktop in desktops.values():
        domain = domains.get(desktop.name)
        # `where`: a desktop that moved to another host since the listing is not judged here.
        if desktop.state in (S.RUNNING, S.STOPPED, S.STOPPING) and domain is None:
            if desktop.transition(S.FAILED, expected=desktop.state, message="domain vanished from the host",
                                  last_error="its virtual machine vanished from the host", where={"host": host}):
                done["vanished"].append(desktop.name)
        elif desktop.state == S.RUNNING and domain is not None and domain.state == "shutoff":
            if desktop.transition(S.STOPPED, expected=S.RUNNING, message="the guest powered itself off",
                                  vnc_port=None, spice_port=None, where={"host": host}):
                done["powered_off"].append(desktop.name)
        elif desktop.state in TRANSITIONAL_STATES and now - desktop.state_changed_at > STUCK_AFTER:
            _unstick(desktop, done)
        elif desktop.state == S.QUEUED and now - desktop.state_changed_at > queued_retry_after:
            _send_again(desktop, done)
        elif desktop.state == S.RESTORING and now - desktop.state_changed_at > RESTORE_STUCK_AFTER:
            _restore_again(desktop, done)

    from .memory import shrink_idle_desktops

    done["ballooned"] = shrink_idle_desktops(host=host, driver=driver, now=now)
    return done


def _send_again(desktop: Desktop, done: dict) -> None:
    """Still queued: its task may never have reached a worker (Redis restarted with it, or was
    away when the launch committed). Send it again; a duplicate finds the work done."""
    if not Desktop.objects.filter(pk=desktop.pk, state=S.QUEUED,
                                  state_changed_at=desktop.state_changed_at).update(state_changed_at=timezone.now()):
        return  # a worker took it meanwhile, or another pass sent it
    desktop.note("no worker took it yet; its task was sent again")
    enqueue_for_host("broker.tasks.provision_desktop_task", desktop.pk, host=desktop.host)
    done["retried"].append(desktop.name)


def _restore_again(desktop: Desktop, done: dict) -> None:
    """Restoring for longer than any copy of a data disk takes, with no worker holding the task
    (a worker that dies returns it to the queue within Redis's visibility timeout, an hour): the
    task was lost with a Redis that restarted. Its data disk was deleted before the copy, so the
    copy is sent again from the same backup; without that backup it cannot go on: failed, with
    what to do."""
    if not Desktop.objects.filter(pk=desktop.pk, state=S.RESTORING,
                                  state_changed_at=desktop.state_changed_at).update(state_changed_at=timezone.now()):
        return
    if desktop.restoring_from_id is None:
        from .provisioning import mark_failed

        mark_failed(desktop_id=desktop.pk, error="its restore was interrupted and the backup it copied is gone, so its data "
                                                 "disk is missing: an admin can restore another of its backups "
                                                 "to a new desktop")
        done["failed"].append(desktop.name)
        return
    desktop.note("restore interrupted (its task was lost); copying the backup again")
    enqueue_for_host("broker.tasks.restore_data_disk_task", desktop.restoring_from_id, desktop.pk, None, False,
                     host=desktop.host)
    done["retried"].append(desktop.name)


def _owned_volume_names(names: set[str]) -> set[str]:
    """Those of `names` that are the system or data volume of a desktop not deleted.

    Desktops of every host, not only the one being reconciled: hosts may share storage (the
    same directory seen by several daemons, as live migration needs), where another host's
    desktop's disk is no orphan of this one. Only the desktops these names could belong to are
    read: a pass over every host must not read every desktop of the site once per host."""
    if not names:
        return set()
    system_of = {name.removesuffix(".qcow2") for name in names if name.endswith(".qcow2")}
    owners = Desktop.objects.exclude(state=S.DELETED).filter(Q(name__in=system_of) | Q(data_volume_name__in=names))
    owned = set()
    for name, data_volume in owners.values_list("name", "data_volume_name"):
        owned.update({f"{name}.qcow2", data_volume})
    return owned & names


def _unstick(desktop: Desktop, done: dict) -> None:
    minutes = int(STUCK_AFTER.total_seconds() // 60)
    if desktop.state == S.MIGRATING:
        from .live_migration import settle_interrupted_migration

        desktop.note(f"move stuck for over {minutes} min; asking both hosts where it runs")
        settle_interrupted_migration(desktop_id=desktop.pk)
        done["retried"].append(desktop.name)
    elif desktop.state == S.DELETING:
        desktop.note(f"deletion stuck for over {minutes} min; retrying")
        enqueue_for_host("broker.tasks.delete_desktop_task", desktop.pk, host=desktop.host)
        done["retried"].append(desktop.name)
    elif desktop.state == S.STOPPING:
        desktop.note(f"shutdown stuck for over {minutes} min; retrying")
        enqueue_for_host("broker.tasks.stop_desktop_task", desktop.pk, "retrying a stuck shutdown", host=desktop.host)
        done["retried"].append(desktop.name)
    elif desktop.provisioning_attempts < MAX_PROVISIONING_ATTEMPTS and desktop.state != S.RECOMPOSING:
        desktop.note(f"stuck in {desktop.state} for over {minutes} min; retrying "
                     f"(attempt {desktop.provisioning_attempts + 1})")
        # Touch state_changed_at so the next pass waits again before judging it stuck.
        Desktop.objects.filter(pk=desktop.pk).update(state_changed_at=timezone.now(),
                                                     provisioning_attempts=desktop.provisioning_attempts + 1)
        enqueue_for_host("broker.tasks.provision_desktop_task", desktop.pk, host=desktop.host)
        done["retried"].append(desktop.name)
    else:
        from .provisioning import mark_failed

        mark_failed(desktop_id=desktop.pk, error=f"stuck in {desktop.state} for over {minutes} min "
                                                 f"after {desktop.provisioning_attempts} attempts")
        done["failed"].append(desktop.name)


def _event(host: Host, message: str) -> None:
    log.info("%s: %s", host.name, message)
    BrokerEvent.objects.create(kind=BrokerEvent.Kind.RECONCILE, host=host, message=message)
