"""High availability: a hypervisor that stopped answering is declared dead, fenced, and its
desktops are brought back elsewhere.

Never two copies of one desktop: nothing is started elsewhere until the dead host is known to
be off, either because its fence command (a fence agent that powers it off) succeeded or
because an admin confirmed it by hand. Then dedicated desktops whose disks are on shared
storage (the host's storage group) start on another host of that group with their disks;
floating desktops and spares are written off (their pools make new ones); a dedicated desktop
whose disks only the dead host had waits for it. If the host comes back, reconciliation
destroys its stale copies (broker/services/hosts.py) and it takes no desktops until an admin
enables it again.
"""

import logging
import shlex
import subprocess
from datetime import timedelta

from django.utils import timezone

from ..enqueue import enqueue_for_host
from ..models import BrokerEvent, Desktop, DesktopState, Host, Pool
from .. import selectors

log = logging.getLogger(__name__)
S = DesktopState
FENCE_TIMEOUT_S = 120
# An agent host reports through its own worker: silence this long means it is not answering.
AGENT_SILENT_AFTER = timedelta(minutes=3)


def unreachable_since(host: Host, *, now) -> "timezone.datetime | None":
    if not host.is_online:
        return host.offline_since or host.last_checked_at or now
    if host.has_own_agent and host.last_checked_at and now - host.last_checked_at > AGENT_SILENT_AFTER:
        return host.last_checked_at
    return None


def hosts_due_for_fencing(*, now=None) -> list[Host]:
    """Hypervisors whose policy says fence now: unreachable longer than their threshold."""
    now = now or timezone.now()
    due = []
    for host in Host.objects.filter(kind=Host.Kind.HYPERVISOR, fenced_at__isnull=True,
                                    fence_after_seconds__isnull=False).exclude(fence_command=""):
        since = unreachable_since(host, now=now)
        if since is not None and (now - since).total_seconds() >= host.fence_after_seconds:
            due.append(host)
    return due


def fence_and_recover(*, host_id: int, now=None) -> bool:
    """Run the host's fence command; if it succeeded, recover its desktops. Returns whether the
    host is fenced now."""
    host = Host.objects.get(pk=host_id)
    if host.fenced_at is not None:
        return True
    if unreachable_since(host, now=now or timezone.now()) is None:
        return False  # it answered again in the meantime: nothing to do
    if not host.fence_command:
        _event(host, "is not answering and has no fence command: its desktops wait for it or for an admin")
        return False
    _event(host, "has not answered for too long: fencing it")
    try:
        done = subprocess.run(shlex.split(host.fence_command), capture_output=True, text=True,
                              timeout=FENCE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _event(host, f"fencing failed ({exc.__class__.__name__}): nothing restarted elsewhere; fix the fence "
                     "agent or confirm by hand that the host is off")
        return False
    if done.returncode != 0:
        # The fence agent's output may hold its parameters: the admin sees only the status.
        log.warning("fence command of %s exited %s", host.name, done.returncode)
        _event(host, f"fencing failed (exit status {done.returncode}): nothing restarted elsewhere; fix the "
                     "fence agent or confirm by hand that the host is off")
        return False
    declare_fenced(host=host, how="its fence command powered it off")
    return True


def declare_fenced(*, host: Host, how: str, actor=None) -> dict:
    """The host is known to be off: mark it so and bring its desktops back elsewhere."""
    now = timezone.now()
    if Host.objects.filter(pk=host.pk, fenced_at__isnull=True).update(fenced_at=now, is_enabled=False):
        who = f" (confirmed by {actor.get_username()})" if actor else ""
        _event(host, f"declared dead and fenced: {how}{who}")
    return recover_desktops(host=Host.objects.get(pk=host.pk), actor=actor)


def recover_desktops(*, host: Host, actor=None) -> dict:
    done = {"restarted": [], "rehomed": [], "written_off": [], "waiting": []}
    for desktop in Desktop.objects.select_related("pool", "host").filter(host=host).exclude(state=S.DELETED):
        if desktop.pool.kind != Pool.Kind.DEDICATED or desktop.user_id is None:
            _write_off(desktop, host)
            done["written_off"].append(desktop.name)
            continue
        destination = selectors.pick_host(pool=desktop.pool, among=Host.objects.filter(
            storage_group=host.storage_group).exclude(pk=host.pk)) if host.storage_group else None
        if destination is None:
            why = "its disks are only on that host" if not host.storage_group else \
                f"no other host of storage group {host.storage_group!r} has room"
            desktop.note(f"its host {host} is dead; it cannot restart elsewhere: {why}")
            done["waiting"].append(desktop.name)
            continue
        was_running = desktop.state in (S.RUNNING, S.STARTING, S.MIGRATING, S.STOPPING)
        if desktop.state in (S.QUEUED, S.CLONING, S.RECOMPOSING, S.FAILED):
            # Half-built: the next launch builds it again, on its new host, keeping its data disk.
            if desktop.state == S.FAILED or desktop.transition(
                    S.FAILED, expected=desktop.state, where={"host": host}, message=f"its host {host} died while "
                    "it was being built", last_error=f"host {host} died"):
                Desktop.objects.filter(pk=desktop.pk, host=host).update(host=destination)
                done["rehomed"].append(desktop.name)
            continue
        if desktop.state == S.STOPPED:
            if Desktop.objects.filter(pk=desktop.pk, state=S.STOPPED, host=host).update(host=destination):
                desktop.note(f"its host {host} died; it now lives on {destination} (same disks), powered off")
                done["rehomed"].append(desktop.name)
            continue
        # Running (or on its way) on the dead host: powered off with it; start it on the new host.
        if desktop.transition(S.STOPPED, expected=desktop.state, where={"host": host}, host=destination,
                              vnc_port=None, spice_port=None,
                              message=f"its host {host} died and was fenced; restarting on {destination}"):
            if was_running and desktop.transition(S.STARTING, expected=S.STOPPED, message="powering on after the "
                                                  "host failure"):
                enqueue_for_host("broker.tasks.start_desktop_task", desktop.pk, host=destination)
                done["restarted"].append(desktop.name)
    if any(done.values()):
        _event(host, "recovery: " + "; ".join(f"{key.replace('_', ' ')} {len(names)}"
                                               for key, names in done.items() if names))
    return done


def _write_off(desktop: Desktop, host: Host) -> None:
    """A spare or a floating desktop: nothing on it is kept; its disks (if shared) are removed
    by reconciliation once the row is gone, the pool makes a new one."""
    if desktop.state != S.FAILED:
        desktop.transition(S.FAILED, expected=desktop.state, message=f"its host {host} died",
                           last_error=f"host {host} died")
    if desktop.transition(S.DELETING, expected=S.FAILED, message="written off with its dead host"):
        desktop.transition(S.DELETED, expected=S.DELETING, message="written off with its dead host")


def _event(host: Host, message: str) -> None:
    log.warning("%s %s", host.name, message)
    BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host, message=f"{host.name} {message}"[:2000])
