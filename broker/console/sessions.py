"""The console session rows the gateway keeps (opened on connect, closed on disconnect), and
the limits a console lives under: how many at once, how long idle, how long at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import BrokerEvent, ConsoleSession
from .close_codes import CloseCode, ConsoleRefused



@dataclass(frozen=True)
class ConsoleLimits:
    max_per_user: int
    max_per_desktop: int
    idle_timeout_s: float | None  # None: never
    max_session_s: float | None
    # Farms: an idle console also ends the session behind it (the broker logs it off).
    idle_ends_session: bool = False


def console_limits(*, pool) -> ConsoleLimits:
    """The console limits of `pool` (a Pool row, e.g. ConsoleTarget.pool), each falling back to
    the site's VDI_CONSOLE_* default."""

    def pick(name, default):
        value = getattr(pool, name, None) if pool is not None else None
        return default if value is None else value

    idle = pick("console_idle_timeout_minutes", settings.VDI_CONSOLE_IDLE_TIMEOUT_MINUTES)
    longest = pick("console_max_session_minutes", settings.VDI_CONSOLE_MAX_SESSION_MINUTES)
    return ConsoleLimits(
        max_per_user=pick("console_max_per_user", settings.VDI_CONSOLE_MAX_PER_USER),
        max_per_desktop=pick("console_max_per_desktop", settings.VDI_CONSOLE_MAX_PER_DESKTOP),
        idle_timeout_s=idle * 60 if idle else None,
        max_session_s=longest * 60 if longest else None,
        idle_ends_session=bool(pool is not None and pool.is_farm),
    )


def abandoned_after() -> timedelta:
    """How long a gateway may leave its console row untouched before the row is taken for
    the leftover of a dead gateway: three missed re-checks."""
    return timedelta(seconds=max(3 * settings.VDI_CONSOLE_RECHECK_SECONDS, 5))


def live_console_sessions(*, now=None):
    """Open console rows whose gateway still vouches for them."""
    now = now or timezone.now()
    return ConsoleSession.objects.filter(closed_at__isnull=True, last_seen_at__gte=now - abandoned_after())


def with_console_activity(desktops, *, now=None):
    """`desktops` (a Desktop queryset) with, per desktop, two subqueries instead of a query per
    row: `live_console_input_at`, the latest keyboard or mouse input (or opening, if none yet)
    of its live consoles, None when it has none; `last_console_closed_at`."""
    live = live_console_sessions(now=now).filter(desktop=OuterRef("pk"))
    closed = ConsoleSession.objects.filter(desktop=OuterRef("pk"), closed_at__isnull=False)
    return desktops.annotate(
        live_console_input_at=Subquery(
            live.annotate(at=Coalesce("last_input_at", "opened_at")).order_by("-at").values("at")[:1]),
        last_console_closed_at=Subquery(closed.order_by("-closed_at").values("closed_at")[:1]),
    )


def _open_sessions(limits: ConsoleLimits | None):
    sessions = live_console_sessions()
    if limits is not None and limits.max_session_s:
        # A row left open by a gateway that died cannot be a console still running.
        sessions = sessions.filter(opened_at__gte=timezone.now() - timedelta(seconds=limits.max_session_s + 60))
    return sessions


def open_console_session(*, user_id: int, desktop_id: int, protocol: str, client_address: str | None,
                         limits: ConsoleLimits | None = None) -> int:
    """Record an opening console; with `limits`, refuse it (ConsoleRefused) when it is one too many.

    The row is written first and counted with the ones before it, so of two consoles opening
    at once on the last free place, the later one is refused, never both let through.
    """
    session = ConsoleSession.objects.create(
        user_id=user_id, desktop_id=desktop_id, protocol=protocol, client_address=client_address
    )
    if limits is None:
        return session.pk
    earlier = _open_sessions(limits).filter(Q(user_id=user_id) | Q(desktop_id=desktop_id), pk__lte=session.pk)
    counts = earlier.aggregate(of_user=Count("pk", filter=Q(user_id=user_id)),
                               on_desktop=Count("pk", filter=Q(desktop_id=desktop_id)))  # one query for both
    refusal = None
    if counts["of_user"] > limits.max_per_user:
        refusal = ConsoleRefused(
            CloseCode.TOO_MANY_CONSOLES_OF_USER,
            f"You already have {limits.max_per_user} consoles open; close one first.")
    elif counts["on_desktop"] > limits.max_per_desktop:
        refusal = ConsoleRefused(
            CloseCode.TOO_MANY_CONSOLES_ON_DESKTOP,
            f"This desktop already has {limits.max_per_desktop} consoles open; close one first.")
    if refusal is not None:
        close_console_session(session_id=session.pk, code=refusal.code, reason=refusal.reason,
                              bytes_to_client=0, bytes_to_desktop=0)
        raise refusal
    return session.pk


def close_console_session(*, session_id: int, code: int | None, reason: str, bytes_to_client: int,
                          bytes_to_desktop: int) -> None:
    ConsoleSession.objects.filter(pk=session_id, closed_at__isnull=True).update(
        closed_at=timezone.now(),
        close_code=code,
        close_reason=reason[:200],
        bytes_to_client=bytes_to_client,
        bytes_to_desktop=bytes_to_desktop,
    )


def touch_console_session(*, session_id: int, last_input_at=None) -> bool:
    """The gateway's sign of life for an open console (and when its user last typed or moved
    the mouse); False if the row was closed meanwhile (the broker took the gateway for dead),
    so the console should reconnect for a new one."""
    fields = {"last_seen_at": timezone.now()}
    if last_input_at is not None:
        fields["last_input_at"] = last_input_at
    return bool(ConsoleSession.objects.filter(pk=session_id, closed_at__isnull=True).update(**fields))


def close_abandoned_console_sessions(*, now=None) -> int:
    """Close the rows of consoles whose gateway died (SIGKILL, crash, lost node): without this
    they would count against the console limits and keep their desktop "connected" forever,
    so a floating desktop would never be reset. Each ends at its last sign of life."""
    now = now or timezone.now()
    closed = ConsoleSession.objects.filter(closed_at__isnull=True, last_seen_at__lt=now - abandoned_after()).update(
        closed_at=F("last_seen_at"),
        close_code=CloseCode.GATEWAY_GONE,
        close_reason="The console gateway stopped answering (crashed, killed or cut off).",
    )
    if closed:
        BrokerEvent.objects.create(
            kind=BrokerEvent.Kind.RECONCILE,
            message=f"Closed {closed} console session(s) whose gateway stopped answering.")
    return closed
