"""Console tickets: issued to a logged-in user for one desktop, redeemed once by the gateway."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .. import selectors
from ..models import ConsoleTicket, Desktop, DesktopState

TOKEN_BYTES = 32


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ConsoleRefused(Exception):
    """The gateway must close the websocket: `code` in the 4000s, `reason` for the page."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


# Close codes the console page understands (application range 4000-4999).
NOT_LOGGED_IN = 4401
ORIGIN_REFUSED = 4403
TICKET_INVALID = 4404
TICKET_EXPIRED = 4408
TICKET_USED = 4409
TICKET_NOT_YOURS = 4410
NOT_ENTITLED = 4411
DESKTOP_NOT_RUNNING = 4412
DESKTOP_UNREACHABLE = 4502


@dataclass(frozen=True)
class ConsoleTarget:
    desktop_id: int
    user_id: int
    protocol: str
    address: str
    port: int


def issue_console_ticket(*, user, session_key: str, desktop: Desktop, protocol: str, origin: str) -> str:
    """Return a fresh token for `user` to open `desktop`'s console from `origin`.

    Only its hash is stored; the token itself reaches no log and no database.
    """
    if desktop.user_id != user.pk or not selectors.is_entitled(user=user, pool=desktop.pool):
        raise ConsoleRefused(NOT_ENTITLED, "This desktop is not yours.")
    if desktop.state != DesktopState.RUNNING:
        raise ConsoleRefused(DESKTOP_NOT_RUNNING, f"The desktop is {desktop.get_state_display().lower()}.")
    if not session_key:
        raise ConsoleRefused(NOT_LOGGED_IN, "Log in first.")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = timezone.now()
    ConsoleTicket.objects.create(
        token_hash=_hash(token),
        user=user,
        session_key_hash=_hash(session_key),
        desktop=desktop,
        protocol=protocol,
        origin=origin,
        expires_at=now + timedelta(seconds=settings.VDI_CONSOLE_TICKET_TTL_SECONDS),
    )
    return token


def redeem_console_ticket(*, token: str, user, session_key: str | None, origin: str,
                          desktop_id: int) -> ConsoleTarget:
    """Check every binding of the ticket, consume it, and resolve the console's address.

    The address comes from the broker's own records of the desktop's host; nothing the client
    sent takes part in choosing it.
    """
    if not user.is_authenticated or not session_key:
        raise ConsoleRefused(NOT_LOGGED_IN, "Your login session has ended. Log in again.")
    if not token or len(token) > 128:
        raise ConsoleRefused(TICKET_INVALID, "Console ticket is missing or invalid.")
    ticket = ConsoleTicket.objects.select_related("desktop__host", "desktop__pool").filter(
        token_hash=_hash(token)
    ).first()
    if ticket is None or ticket.desktop_id != desktop_id:
        raise ConsoleRefused(TICKET_INVALID, "Console ticket is missing or invalid.")
    if ticket.user_id != user.pk or ticket.session_key_hash != _hash(session_key):
        raise ConsoleRefused(TICKET_NOT_YOURS, "This console ticket was issued to another login session.")
    if ticket.origin != origin:
        raise ConsoleRefused(ORIGIN_REFUSED, "Console ticket was issued for another site.")
    now = timezone.now()
    if ticket.used_at is not None:
        raise ConsoleRefused(TICKET_USED, "Console ticket was already used. Reload to reconnect.")
    if ticket.expires_at <= now:
        raise ConsoleRefused(TICKET_EXPIRED, "Console ticket expired. Reload to reconnect.")
    # Consume: of two simultaneous uses, exactly one UPDATE matches.
    if not ConsoleTicket.objects.filter(pk=ticket.pk, used_at__isnull=True).update(used_at=now):
        raise ConsoleRefused(TICKET_USED, "Console ticket was already used. Reload to reconnect.")

    desktop = Desktop.objects.select_related("host", "pool").get(pk=ticket.desktop_id)
    if desktop.user_id != user.pk or not selectors.is_entitled(user=user, pool=desktop.pool):
        raise ConsoleRefused(NOT_ENTITLED, "You are no longer entitled to this desktop.")
    if desktop.state != DesktopState.RUNNING:
        raise ConsoleRefused(DESKTOP_NOT_RUNNING, f"The desktop is {desktop.get_state_display().lower()}.")
    port = desktop.vnc_port if ticket.protocol == "vnc" else desktop.spice_port
    if not port:
        raise ConsoleRefused(DESKTOP_UNREACHABLE, f"The desktop has no {ticket.protocol.upper()} console.")
    return ConsoleTarget(
        desktop_id=desktop.pk,
        user_id=user.pk,
        protocol=ticket.protocol,
        address=desktop.host.console_address,
        port=port,
    )


def purge_expired_tickets(*, older_than: timedelta = timedelta(hours=1)) -> int:
    deleted, _ = ConsoleTicket.objects.filter(expires_at__lt=timezone.now() - older_than).delete()
    return deleted
