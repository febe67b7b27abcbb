"""When a user is done with a desktop: wipe a floating one, power off a dedicated one.

"Done" is an explicit log off in the portal, or no console open for longer than the pool's
disconnect timeout (counted from the last console closed, or from the assignment if the user
never connected).
"""

from datetime import timedelta

from django.db.models import Exists, Max, OuterRef, Subquery
from django.utils import timezone

from ..models import ConsoleSession, Desktop, DesktopState, Pool
from ..console.close_codes import CloseCode
from ..console.sessions import close_abandoned_console_sessions, live_console_sessions
from ..enqueue import enqueue_for_host

S = DesktopState


def end_desktop_session(*, desktop: Desktop, actor=None, reason: str) -> None:
    """The user is done: reset a floating desktop (a fresh one replaces it), power off a
    dedicated one, log a farm session off. Consoles close at once either way."""
    if desktop.pool.is_farm:
        from .farm_sessions import log_off_session

        return log_off_session(session=desktop, actor=actor, reason=reason)
    if desktop.pool.kind == Pool.Kind.FLOATING:
        if desktop.transition(S.DELETING, expected={S.RUNNING, S.STOPPED, S.FAILED, S.QUEUED, S.CLONING,
                                                    S.STARTING},
                              message=f"reset: {reason}", actor=actor):
            # Detach the user now: their next launch gets a fresh desktop, never this one.
            Desktop.objects.filter(pk=desktop.pk).update(user=None)
            enqueue_for_host("broker.tasks.delete_desktop_task", desktop.pk, host=desktop.host)
    elif desktop.state == S.RUNNING:
        enqueue_for_host("broker.tasks.stop_desktop_task", desktop.pk, reason, host=desktop.host)


def desktops_disconnected_too_long(*, now=None):
    """Assigned, running desktops whose pool has a disconnect timeout that has passed."""
    now = now or timezone.now()
    connected = live_console_sessions(now=now).filter(desktop=OuterRef("pk"))
    candidates = (
        Desktop.objects.filter(state=S.RUNNING, user__isnull=False, pool__disconnect_timeout_minutes__isnull=False)
        .filter(~Exists(connected))  # someone is connected; in the query, not a query per desktop
        .select_related("pool", "host")
        .annotate(last_closed=Max("console_sessions__closed_at"))
    )
    for desktop in candidates:
        idle_since = max(filter(None, [desktop.last_closed, desktop.assigned_at, desktop.state_changed_at]))
        if now - idle_since >= timedelta(minutes=desktop.pool.disconnect_timeout_minutes):
            yield desktop


def farm_sessions_left_idle(*, now=None):
    """Running farm sessions whose console closed for want of input, and none is open: a farm's
    idle timeout ends the session itself (the page warned a few minutes before)."""
    now = now or timezone.now()
    # The last console's close code and whether one is open, in the query: not two queries
    # per running session at every pass.
    last_console = ConsoleSession.objects.filter(desktop=OuterRef("pk")).order_by("-opened_at")
    connected = live_console_sessions(now=now).filter(desktop=OuterRef("pk"))
    yield from (
        Desktop.objects.filter(state=S.RUNNING, pool__kind=Pool.Kind.FARM)
        .annotate(last_console_close_code=Subquery(last_console.values("close_code")[:1]))
        .filter(last_console_close_code=CloseCode.IDLE_TIMEOUT)
        .filter(~Exists(connected))
        .select_related("pool")
    )


def enforce_disconnect_timeouts(*, now=None) -> int:
    # First end the consoles of gateways that died: their rows would look connected forever.
    close_abandoned_console_sessions(now=now)
    count = 0
    for session in farm_sessions_left_idle(now=now):
        end_desktop_session(desktop=session, reason="idle: no keyboard or mouse input for the farm's idle timeout")
        count += 1
    for desktop in desktops_disconnected_too_long(now=now):
        minutes = desktop.pool.disconnect_timeout_minutes
        end_desktop_session(desktop=desktop, reason=f"disconnected for more than {minutes} min")
        count += 1
    return count

