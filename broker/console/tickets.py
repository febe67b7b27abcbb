"""Console tickets: issued to a logged-in user for one desktop, redeemed by the gateway.

A ticket is 256 random bits, stored only as its SHA-256, valid for seconds, and bound to the
user, their login session, the desktop, the protocol and the page's Origin. Granting one also
gives the desktop's console a fresh one-time password (valid as long as the ticket) and reads
the console's port from the domain's live definition. When the console connects, the gateway
resolves the port again (console_port_now) and connects there only if it is still the port
the password was set on. The password is stored sealed with a key derived from the token,
which only the browser holds, so neither the database nor the browser alone can reveal it.

VNC tickets admit one websocket. SPICE opens one websocket per channel to the same URL, so a
SPICE ticket admits its main channel first, then each other channel type once, for a few
seconds after the first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.crypto import salted_hmac

from config.request_ids import current_request_id

from .. import selectors
from ..hypervisor.xml import VNC_PASSWORD_MAX
from ..models import ConsoleTicket, Desktop, DesktopState
from . import spice
from .close_codes import CloseCode, ConsoleRefused
from .login import user_of_login_session
from .targets import ConsoleTarget, console_kind_for

TOKEN_BYTES = 32
SPICE_PASSWORD_CHARS = 20


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class ConsoleGrant:
    token: str
    protocol: str
    # Only where the browser itself must log in: SPICE (spice-html5 answers the server), or
    # VNC through a websockify tier (which only relays bytes). Expires with the ticket.
    browser_password: str | None = field(default=None, repr=False)


def _sealed(password: str, pad: bytes) -> str:
    data = password.encode()
    if len(data) > len(pad):
        raise ValueError("console passwords are at most 32 bytes")
    return bytes(a ^ b for a, b in zip(data, pad)).hex()


def _unsealed(sealed: str, pad: bytes) -> str:
    return bytes(a ^ b for a, b in zip(bytes.fromhex(sealed), pad)).decode()


def _token_pad(token: str) -> bytes:
    return hmac.new(token.encode(), b"vdi console password", hashlib.sha256).digest()


def seal_password(password: str, token: str) -> str:
    """One-time pad from HMAC(token): the stored value is useless without the token."""
    return _sealed(password, _token_pad(token))


def unseal_password(sealed: str, token: str) -> str:
    return _unsealed(sealed, _token_pad(token))


def _first_password_pad(desktop_id: int, until) -> bytes:
    # One pad per write: the row and the moment it stops being of use.
    return salted_hmac("vdi first console password", f"{desktop_id} {until.astimezone(UTC).isoformat()}",
                       algorithm="sha256").digest()


def seal_first_password(password: str, *, desktop_id: int, until) -> str:
    """A farm session's first console password as its row keeps it until a ticket takes it
    (Desktop.sealed_first_console_password): a pad from HMAC(SECRET_KEY, row, until), so the
    database alone cannot reveal it; the portal and the agents hold the key."""
    return _sealed(password, _first_password_pad(desktop_id, until))


def unseal_first_password(sealed: str, *, desktop_id: int, until) -> str:
    return _unsealed(sealed, _first_password_pad(desktop_id, until))


def _refuse_unless_running(desktop: Desktop) -> None:
    if desktop.state == DesktopState.MIGRATING:
        # Seconds from now it runs on its new host: the page tries again by itself (1012).
        raise ConsoleRefused(CloseCode.RECONNECT, "The desktop is moving to another server; reconnecting.")
    if desktop.state != DesktopState.RUNNING:
        raise ConsoleRefused(CloseCode.DESKTOP_NOT_RUNNING, f"The desktop is {desktop.get_state_display().lower()}.")


def _check_may_open(*, user, session_key: str | None, desktop: Desktop) -> None:
    if desktop.user_id != user.pk or not selectors.is_entitled(user=user, pool=desktop.pool):
        raise ConsoleRefused(CloseCode.NOT_ENTITLED, "This desktop is not yours.")
    _refuse_unless_running(desktop)
    if not session_key:
        raise ConsoleRefused(CloseCode.NOT_LOGGED_IN, "Log in first.")


def new_console_password(protocol: str) -> str:
    if protocol == "vnc":
        return secrets.token_urlsafe(VNC_PASSWORD_MAX)[:VNC_PASSWORD_MAX]  # 48 random bits
    return secrets.token_urlsafe(SPICE_PASSWORD_CHARS)[:SPICE_PASSWORD_CHARS]


def console_ticket_validity_s() -> int:
    """How long a ticket's console password works on the desktop: the ticket's own life, and
    SPICE's window for the extra channels it opens after the main one."""
    return settings.VDI_CONSOLE_TICKET_TTL_SECONDS + int(settings.VDI_CONSOLE_SPICE_CHANNEL_WINDOW_SECONDS)


def grant_console(*, user, session_key: str, desktop: Desktop, protocol: str, origin: str) -> ConsoleGrant:
    """What the console page gets: a ticket, after the desktop's console got a fresh password.

    Reads the console port from the running domain's live definition (not from the row), so
    the gateway connects to what the hypervisor says now.
    """
    _check_may_open(user=user, session_key=session_key, desktop=desktop)
    if protocol not in ("vnc", "spice"):
        raise ConsoleRefused(CloseCode.TICKET_INVALID, f"Unknown console protocol {protocol!r}.")
    # Valid a little past the ticket: SPICE's last channel may log in that much later.
    endpoint = console_kind_for(desktop).prepare(
        desktop, protocol=protocol, password=new_console_password(protocol),
        valid_for_s=console_ticket_validity_s())
    port, password = endpoint.port, endpoint.password
    token = _new_ticket(user=user, session_key=session_key, desktop=desktop, protocol=protocol,
                        origin=origin, port=port, console_password=password)
    browser_needs_password = protocol == "spice" or settings.VDI_CONSOLE_GATEWAY_KIND == "websockify"
    return ConsoleGrant(token=token, protocol=protocol, browser_password=password if browser_needs_password else None)


def issue_console_ticket(*, user, session_key: str, desktop: Desktop, protocol: str, origin: str,
                         port: int | None = None, console_password: str | None = None) -> str:
    """Return a fresh token for `user` to open `desktop`'s console from `origin`.

    Only its hash is stored; the token itself reaches no log and no database. `port` and
    `console_password` are what grant_console() set up on the domain.
    """
    _check_may_open(user=user, session_key=session_key, desktop=desktop)
    return _new_ticket(user=user, session_key=session_key, desktop=desktop, protocol=protocol, origin=origin,
                       port=port, console_password=console_password)


def _new_ticket(*, user, session_key: str, desktop: Desktop, protocol: str, origin: str, port: int | None,
                console_password: str | None) -> str:
    """The ticket row, for a caller that checked _check_may_open; returns the token."""
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
        port=port,
        sealed_password=seal_password(console_password, token) if console_password else "",
        request_id=current_request_id(),
    )
    return token


def redeem_console_ticket(*, token: str, user, session_key: str | None, origin: str | None,
                          desktop_id: int | None) -> ConsoleTarget:
    """Check every binding of the ticket, consume it, and resolve the console's address.

    The address is the console address of the desktop's host (a Host row of the broker) and
    the port is resolved now (console_port_now); nothing the client sent takes part.
    """
    if not user.is_authenticated or not session_key:
        raise ConsoleRefused(CloseCode.NOT_LOGGED_IN, "Your login session has ended. Log in again.")
    if not token or len(token) > 128:
        raise ConsoleRefused(CloseCode.TICKET_INVALID, "Console ticket is missing or invalid.")
    ticket = ConsoleTicket.objects.filter(token_hash=_hash(token)).first()
    # desktop_id None: a gateway whose URL does not name the desktop (websockify's `?token=`).
    if ticket is None or (desktop_id is not None and ticket.desktop_id != desktop_id):
        raise ConsoleRefused(CloseCode.TICKET_INVALID, "Console ticket is missing or invalid.")
    if ticket.user_id != user.pk or ticket.session_key_hash != _hash(session_key):
        raise ConsoleRefused(CloseCode.TICKET_NOT_YOURS, "This console ticket was issued to another login session.")
    if ticket.origin != origin:
        raise ConsoleRefused(CloseCode.ORIGIN_REFUSED, "Console ticket was issued for another site.")
    now = timezone.now()
    first_use = True
    if ticket.used_at is not None:
        window = timedelta(seconds=settings.VDI_CONSOLE_SPICE_CHANNEL_WINDOW_SECONDS)
        if ticket.protocol != "spice" or now - ticket.used_at > window:
            raise ConsoleRefused(CloseCode.TICKET_USED, "Console ticket was already used. Reload to reconnect.")
        first_use = False  # another channel of the same SPICE session; admit_spice_channel decides
    elif ticket.expires_at <= now:
        raise ConsoleRefused(CloseCode.TICKET_EXPIRED, "Console ticket expired. Reload to reconnect.")
    # Consume: of two simultaneous uses, exactly one UPDATE matches.
    elif not ConsoleTicket.objects.filter(pk=ticket.pk, used_at__isnull=True).update(used_at=now):
        raise ConsoleRefused(CloseCode.TICKET_USED, "Console ticket was already used. Reload to reconnect.")

    desktop = Desktop.objects.select_related("host", "pool").get(pk=ticket.desktop_id)
    if desktop.user_id != user.pk or not selectors.is_entitled(user=user, pool=desktop.pool):
        raise ConsoleRefused(CloseCode.NOT_ENTITLED, "You are no longer entitled to this desktop.")
    _refuse_unless_running(desktop)
    if first_use or not ticket.port:
        port = console_port_now(desktop=desktop, protocol=ticket.protocol, granted_port=ticket.port)
    else:  # another channel of a SPICE session whose main channel resolved it seconds ago
        port = ticket.port
    return ConsoleTarget(
        desktop_id=desktop.pk,
        user_id=user.pk,
        protocol=ticket.protocol,
        address=console_kind_for(desktop).address(desktop),
        port=port,
        ticket_id=ticket.pk,
        pool=desktop.pool,
        password=unseal_password(ticket.sealed_password, token) if ticket.sealed_password else None,
        first_use=first_use,
        request_id=ticket.request_id,
    )


def peek_console_target(*, token: str) -> tuple[str, int] | None:
    """Where a still unused, unexpired ticket's console is, without consuming it (for gateways
    that must name the target before they may check the login: websockify). None otherwise."""
    if not token or len(token) > 128:
        return None
    ticket = (ConsoleTicket.objects.select_related("desktop__host", "desktop__pool")
              .filter(token_hash=_hash(token), used_at__isnull=True, expires_at__gt=timezone.now()).first())
    if ticket is None:
        return None
    desktop = ticket.desktop
    try:
        port = console_port_now(desktop=desktop, protocol=ticket.protocol, granted_port=ticket.port)
    except ConsoleRefused:
        return None
    return console_kind_for(desktop).address(desktop), port


def console_port_now(*, desktop: Desktop, protocol: str, granted_port: int | None) -> int:
    """The port the desktop's console listens on now, resolved on the server when a console
    connects; nothing the browser sent takes part.

    VDI_CONSOLE_TARGET_LOOKUP "live": asked of the desktop's host through libvirt, from the
    running domain's definition. "recorded" (a proxy tier that cannot reach libvirt): what the
    broker read from that definition when the domain last started. The port must also be the
    one the grant read, where the one-time password was set: a domain restarted in between
    (and maybe another one on that port now) is refused, and the page reconnects.
    """
    port = console_kind_for(desktop).port_now(desktop, protocol=protocol)
    if not port:
        raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE, f"The desktop has no {protocol.upper()} console.")
    if granted_port and port != granted_port:
        raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE, "The desktop's console moved (its VM restarted); reconnecting.")
    return port


def admit_spice_channel(*, ticket_id: int, channel_type: int, first_use: bool) -> None:
    """Let one more websocket of a SPICE session through: main first, every other type once."""
    if first_use != (channel_type == spice.CHANNEL_MAIN) or channel_type not in spice.ADMITTED_CHANNELS:
        raise ConsoleRefused(CloseCode.SPICE_CHANNEL_REFUSED, "This console ticket does not admit that SPICE channel.")
    mark = f"{channel_type},"
    for _attempt in range(10):
        seen = ConsoleTicket.objects.filter(pk=ticket_id).values_list("spice_channels", flat=True).first()
        if seen is None or f",{mark}" in f",{seen}":
            raise ConsoleRefused(CloseCode.SPICE_CHANNEL_REFUSED, "This console ticket does not admit that SPICE channel.")
        # Compare-and-set, so two sockets claiming the same channel cannot both win.
        if ConsoleTicket.objects.filter(pk=ticket_id, spice_channels=seen).update(spice_channels=seen + mark):
            return
    raise ConsoleRefused(CloseCode.SPICE_CHANNEL_REFUSED, "This console ticket does not admit that SPICE channel.")


def console_still_allowed(*, user_id: int, desktop_id: int, session_key: str) -> ConsoleRefused | None:
    """The gateway's periodic re-check of an open console, in case a "close" message was lost:
    the login session still exists, the user may still use this desktop, and it still runs."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import get_user_model

    if not import_module(settings.SESSION_ENGINE).SessionStore().exists(session_key):
        return ConsoleRefused(CloseCode.NOT_LOGGED_IN, "You logged out.")
    if user_of_login_session(session_key).pk != user_id:  # e.g. the password changed since the login
        return ConsoleRefused(CloseCode.NOT_LOGGED_IN, "Your login session has ended. Log in again.")
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    desktop = Desktop.objects.select_related("pool").filter(pk=desktop_id).first()
    if user is None or desktop is None or desktop.user_id != user_id or not selectors.is_entitled(
            user=user, pool=desktop.pool):
        return ConsoleRefused(CloseCode.NOT_ENTITLED, "Your access to this desktop was withdrawn.")
    if desktop.state not in (DesktopState.RUNNING, DesktopState.MIGRATING):  # a moving desktop still runs
        return ConsoleRefused(CloseCode.DESKTOP_NOT_RUNNING, f"The desktop is {desktop.get_state_display().lower()}.")
    return None


def purge_expired_tickets(*, older_than: timedelta = timedelta(hours=1)) -> int:
    deleted, _ = ConsoleTicket.objects.filter(expires_at__lt=timezone.now() - older_than).delete()
    return deleted
