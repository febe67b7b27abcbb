"""Memory overcommit: idle VM desktops give memory back to their host, and get it back the
moment their user connects.

A running desktop with no console open for VDI_BALLOON_IDLE_MINUTES is ballooned down to
VDI_BALLOON_IDLE_SHARE of its pool's memory (never under MIN_GUEST_MIB), if its guest's balloon
driver answers; the first console grant inflates it back to the pool's memory before the
console opens. Placement keeps counting the pool's full memory: what ballooning frees is the
host's margin, not room promised to new desktops.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..hypervisor import DomainNotFound, HypervisorError
from ..models import ConsoleSession, Desktop, DesktopState, Pool

log = logging.getLogger(__name__)
MIN_GUEST_MIB = 128


def idle_desktops_to_shrink(*, host, now=None):
    """Running VM desktops of `host` with full memory and no console for the idle time."""
    now = now or timezone.now()
    idle_since = now - timedelta(minutes=settings.VDI_BALLOON_IDLE_MINUTES)
    return (Desktop.objects.filter(host=host, state=DesktopState.RUNNING, memory_target_mib__isnull=True)
            .exclude(pool__kind=Pool.Kind.FARM)
            .exclude(pk__in=ConsoleSession.objects.filter(closed_at__isnull=True).values("desktop_id"))
            .annotate(last_console=Coalesce(Max("console_sessions__closed_at"), "state_changed_at"))
            .filter(Q(last_console__lt=idle_since))
            .select_related("pool"))


def shrink_idle_desktops(*, host, driver, now=None) -> list[str]:
    """Balloon the idle desktops of `host` down (reconciliation calls this with the host's driver)."""
    if not settings.VDI_BALLOON_IDLE_MINUTES:
        return []
    shrunk = []
    for desktop in idle_desktops_to_shrink(host=host, now=now):
        target = max(MIN_GUEST_MIB, int(desktop.pool.memory_mib * settings.VDI_BALLOON_IDLE_SHARE))
        if target >= desktop.pool.memory_mib:
            continue
        try:
            if not driver.balloon_info(desktop.name).guest_cooperates:
                continue  # no balloon driver in the guest: a target would never be reached
            driver.set_balloon_target(desktop.name, memory_mib=target)
        except (DomainNotFound, HypervisorError) as exc:
            log.info("could not balloon %s: %s", desktop.name, exc)
            continue
        if Desktop.objects.filter(pk=desktop.pk, state=DesktopState.RUNNING, memory_target_mib__isnull=True) \
                .update(memory_target_mib=target):
            desktop.note(f"idle for {settings.VDI_BALLOON_IDLE_MINUTES:g} min without a console: gave memory back "
                         f"to its host ({desktop.pool.memory_mib} → {target} MiB)")
            shrunk.append(desktop.name)
    return shrunk


def give_memory_back(*, desktop, driver) -> None:
    """Before a console opens: the guest gets its pool's full memory again."""
    if not desktop.memory_target_mib:
        return
    driver.set_balloon_target(desktop.name, memory_mib=desktop.pool.memory_mib)
    if Desktop.objects.filter(pk=desktop.pk, memory_target_mib__isnull=False).update(memory_target_mib=None):
        desktop.note(f"its user connected: memory back to {desktop.pool.memory_mib} MiB")
    desktop.memory_target_mib = None
