"""The console websocket: check the ticket, log in to the desktop, then copy bytes.

A plain ASGI app behind nothing but Channels' URL router, because a relay wants its own loop:
it reads the browser while it talks to the desktop, with no dispatch layer and no middleware
wrapper in between. Everything a console needs before it may open (Origin, login session,
ticket, target, limits, session row) is one trip to a database thread (admit_console below).
It writes nothing but the console session row.

- Backpressure both ways: the desktop is read only while at most two chunks wait for the
  browser (desktop_socket.py), and uvicorn's send waits while the browser socket's write
  buffer is full; each browser message is written to the desktop and drained before the next
  is read.
- Screen data is not copied in Python on its way out, and while the browser keeps up it goes
  out from the desktop socket's data_received with no task switch (desktop_socket.py,
  uvicorn_protocol.DirectBinarySend); under any other ASGI server it goes through send().
- TCP_NODELAY on the desktop socket (asyncio sets it on the browser's too). No per-message
  compression: config/serve.py runs uvicorn with `--ws-per-message-deflate false`.
- VNC: the gateway answers QEMU's VNC authentication with the ticket's one-time password and
  offers the browser "None" (rfb.py), so noVNC never holds a password.
- SPICE: each channel's websocket names its channel in its first message (spice.py); the
  ticket admits the main channel, then each other channel once.
- The channel layer carries only "close this console" messages (console_control.py); it is
  never in the data path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs

import structlog
from django.conf import settings
from django.http.cookie import parse_cookie
from channels.layers import get_channel_layer

from config.request_ids import bind_websocket_request_id

from ..database_threads import in_a_database_thread
from . import control as console_control
from . import rfb, spice, tickets
from . import sessions as console_sessions
from .close_codes import CloseCode, ConsoleRefused
from .targets import ConsoleTarget
from .desktop_socket import DesktopChunks
from .handshake import PongBudget, refuse_before_opening, refused_before_opening
from .login import cookie_header, login_from_cookie_header, login_session_exists
from .origin import is_allowed_origin, websocket_origin
from .uvicorn_protocol import DIRECT_BINARY_SEND

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 5
LINK_TIMEOUT_S = 10
IDLE_WARNING_S = 300  # warn this long before an idle close (at most a fifth of the idle timeout)


class BrowserGone(Exception):
    pass


async def _all_or_first_failure(coroutines) -> list:
    """Run them at once; the first to fail cancels the others (a refused login must not wait
    for a browser that is still in its handshake) and its exception is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:g} h"


async def console_gateway(scope, receive, send):
    """ASGI entry point for ws/console/<desktop_id>/."""
    if scope["type"] != "websocket":
        return
    await ConsoleConnection(scope, receive, send).serve()


class ConsoleConnection:
    def __init__(self, scope, receive, send):
        self.scope, self.receive, self.send = scope, receive, send
        self.closed_with: tuple[int, str] | None = None
        self.bytes_to_client = self.bytes_to_desktop = 0
        self.session_id: int | None = None
        self.session_key: str | None = None  # the login session's, once admitted
        self.request_id = ""  # this websocket's own (config/request_ids.py)
        self.target: ConsoleTarget | None = None
        self.guest_writer: asyncio.StreamWriter | None = None
        self.desktop: DesktopChunks | None = None
        self.tasks: list[asyncio.Task] = []
        self.channel_name: str | None = None
        self.groups_joined: list[str] = []
        self.last_input = self.opened = time.monotonic()
        self.counts_as_console = self.watches_input = True  # SPICE: only its main / inputs channel
        self.accepted = False
        self.browser_left = (1000, "closed by the browser")
        self.pongs = PongBudget()
        # How the console closes when the desktop's side ends (a live migration changes it).
        self.desktop_end = (CloseCode.DESKTOP_CLOSED, "The desktop closed the console (it may have powered off).")

    # -- the connection's life -----------------------------------------------------------
    async def serve(self):
        if (await self.receive())["type"] != "websocket.connect":
            return
        # Every line of this console carries a request id (a trusted proxy's, or its own) and
        # the desktop; once the ticket is redeemed, the ticket request's id and the ticket's
        # database id (config/request_ids.py).
        self.request_id = bind_websocket_request_id(
            self.scope, desktop_id=self.scope["url_route"]["kwargs"].get("desktop_id"))
        try:
            # Admitted (Origin, login, ticket) before the websocket opens: a client without a
            # login never gets an open websocket (handshake.py); other refusals open it to
            # give the page their close code and reason.
            admitted = await self._admit()
            await self._accept()
            await self._open_and_relay(*admitted)
        except ConsoleRefused as refused:
            log.info("console refused: desktop=%s user=%s code=%s reason=%s",
                     self.scope["url_route"]["kwargs"].get("desktop_id"),
                     self.target.user_id if self.target else None, refused.code, refused.reason)
            if not self.accepted and refused_before_opening(refused):
                await refuse_before_opening(self.scope, self.send, refused)
                return
            await self._accept()
            await self._close(refused.code, refused.reason)
        except BrowserGone:
            pass
        finally:
            await self._clean_up()

    async def _accept(self):
        if not self.accepted:
            self.accepted = True
            offered = self.scope.get("subprotocols") or []
            await self.send({"type": "websocket.accept", "subprotocol": "binary" if "binary" in offered else None})

    async def _open_and_relay(self, target, limits):
        browser = rfb.BrowserBytes(self._browser_message)
        spice_link = b""
        if target.protocol == "spice":
            spice_link, channel = await self._read_spice_link()
            await in_a_database_thread(tickets.admit_spice_channel)(
                ticket_id=target.ticket_id, channel_type=channel, first_use=target.first_use)
            self.counts_as_console = channel == spice.CHANNEL_MAIN
            self.watches_input = channel == spice.CHANNEL_INPUTS

        # All of this at once: the connect latency is the slowest step, not their sum. The
        # console listens for "close" messages before it relays anything, so a logout or a
        # reset right after it opened still reaches it.
        steps = [self._open_guest(target), self._join_control_groups(target)]
        if self.counts_as_console and self.session_id is None:  # SPICE's main channel
            steps.append(self._open_session_row(target, limits))
        if target.protocol == "vnc":
            steps.append(self._offer_browser_no_authentication(browser))
        reader, writer = (await _all_or_first_failure(steps))[0]
        # The handshake is over: from here the desktop socket is relayed chunk by chunk.
        # (What the StreamReader already buffered is handed over first.)
        direct = self.scope.get("extensions", {}).get(DIRECT_BINARY_SEND, {}).get("sender")
        desktop = self.desktop = DesktopChunks(writer.transport, bytes(reader._buffer), direct=direct)
        writer.transport.set_protocol(desktop)
        if not writer.transport.is_reading():
            writer.transport.resume_reading()  # the StreamReader may have paused it
        first_bytes = browser.leftover() if target.protocol == "vnc" else spice_link
        if first_bytes:
            await desktop.write(first_bytes)
        log.info("console opened: desktop=%s user=%s protocol=%s", target.desktop_id, target.user_id,
                 target.protocol)
        self.tasks.append(asyncio.create_task(self._follow_control_messages(target)))
        self.tasks.append(asyncio.create_task(self._pump_desktop_to_browser(desktop)))
        self.tasks.append(asyncio.create_task(self._enforce_time_limits(limits)))
        self.tasks.append(asyncio.create_task(self._recheck_periodically(target)))
        await self._pump_browser_to_desktop(desktop)

    async def _admit(self) -> tuple[ConsoleTarget, console_sessions.ConsoleLimits]:
        if not is_allowed_origin(self.scope):
            raise ConsoleRefused(CloseCode.ORIGIN_REFUSED, "This page's origin may not open consoles.")
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("ticket") or [""])[0]
        cookies, origin = cookie_header(self.scope), websocket_origin(self.scope)
        if not parse_cookie(cookies).get(settings.SESSION_COOKIE_NAME):  # no trip to the database for it
            raise ConsoleRefused(CloseCode.NOT_LOGGED_IN, "Your login session has ended. Log in again.")
        desktop_id = int(self.scope["url_route"]["kwargs"]["desktop_id"])
        client_address = (self.scope.get("client") or [None])[0]

        def admit_console():  # one trip to a database thread (and connection) for all of it
            user, session_key = login_from_cookie_header(cookies)
            target = tickets.redeem_console_ticket(token=token, user=user, session_key=session_key,
                                                   origin=origin, desktop_id=desktop_id)
            self.target, self.session_key = target, session_key
            limits = console_sessions.console_limits(pool=target.pool)
            if target.protocol == "vnc":  # a SPICE socket names its channel only in its first message
                self.session_id = console_sessions.open_console_session(
                    user_id=target.user_id, desktop_id=target.desktop_id, protocol=target.protocol,
                    client_address=client_address, limits=limits)
            return target, limits

        # Not thread-sensitive: many consoles opening at once (9 a.m.) are admitted in parallel
        # database threads instead of queueing for the one shared thread.
        target, limits = await in_a_database_thread(admit_console)()
        # From here the console's lines join the trail of the page's ticket request.
        structlog.contextvars.bind_contextvars(
            request_id=target.request_id or self.request_id, websocket_request_id=self.request_id,
            ticket_id=target.ticket_id, console_session_id=self.session_id)
        return target, limits

    async def _read_spice_link(self) -> tuple[bytes, int]:
        data = b""
        try:
            async with asyncio.timeout(LINK_TIMEOUT_S):
                while (channel := spice.link_channel_type(data)) is None:
                    data += await self._browser_message()
        except (spice.NotSpice, TimeoutError) as exc:
            raise ConsoleRefused(CloseCode.SPICE_CHANNEL_REFUSED, "This is not a SPICE client.") from exc
        return data, channel

    async def _offer_browser_no_authentication(self, browser: rfb.BrowserBytes):
        try:
            await asyncio.wait_for(rfb.offer_no_authentication(browser, self._send_bytes), rfb.HANDSHAKE_TIMEOUT_S)
        except (rfb.HandshakeFailed, asyncio.TimeoutError) as exc:
            raise ConsoleRefused(CloseCode.TICKET_INVALID, "The browser did not speak VNC.") from exc

    async def _open_guest(self, target: ConsoleTarget):
        """Connect to the desktop's console port; for VNC, also log in with the ticket's password."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.address, target.port, limit=CHUNK), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("console of desktop %s unreachable: %s", target.desktop_id, exc)
            raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE, "The desktop's console does not answer.") from exc
        self.guest_writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.protocol == "vnc":
            await self._log_in_to_desktop(reader, writer, target.password)
        return reader, writer

    async def _log_in_to_desktop(self, reader, writer, password):
        try:
            await asyncio.wait_for(rfb.authenticate_to_desktop(reader, writer, password or ""),
                                   rfb.HANDSHAKE_TIMEOUT_S)
        except (rfb.HandshakeFailed, asyncio.TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, rfb.HandshakeFailed) else "The desktop's console did not answer."
            raise ConsoleRefused(CloseCode.DESKTOP_LOGIN_FAILED, reason) from exc

    async def _open_session_row(self, target, limits):
        self.session_id = await in_a_database_thread(console_sessions.open_console_session)(
            user_id=target.user_id, desktop_id=target.desktop_id, protocol=target.protocol,
            client_address=(self.scope.get("client") or [None])[0], limits=limits)

    # -- the relay ------------------------------------------------------------------------
    async def _browser_message(self) -> bytes:
        """The browser's next binary message (its text frames are control: see _answer_text)."""
        while True:
            event = await self.receive()
            if event["type"] != "websocket.receive":
                self._note_browser_left(event)
                raise BrowserGone()
            data = event.get("bytes")
            if data is None:
                await self._answer_text(event.get("text") or "")
                continue
            self.bytes_to_desktop += len(data)
            return data

    async def _answer_text(self, text: str):
        """Text frames never reach the desktop (RFB and SPICE are binary). The page pings with
        them to show the round-trip time; the answer queues behind any screen data, so it
        measures what the user feels."""
        if text.startswith("vdi-ping ") and len(text) < 64 and self.pongs.may_answer():
            await self.send({"type": "websocket.send", "text": "vdi-pong " + text[9:]})

    async def _send_bytes(self, data: bytes):
        self.bytes_to_client += len(data)
        await self.send({"type": "websocket.send", "bytes": data})

    async def _pump_browser_to_desktop(self, desktop: DesktopChunks):
        receive, watches_input = self.receive, self.watches_input
        vnc = self.target.protocol == "vnc"
        try:
            while True:
                event = await receive()
                if event["type"] != "websocket.receive":
                    self._note_browser_left(event)
                    return
                data = event.get("bytes")
                if data is None:
                    await self._answer_text(event.get("text") or "")
                    continue
                self.bytes_to_desktop += len(data)
                if watches_input and (not vnc or rfb.carries_user_input(data)):
                    self.last_input = time.monotonic()
                await desktop.write(data)
        except (ConnectionError, OSError):
            await self._close(*self.desktop_end)

    async def _pump_desktop_to_browser(self, desktop: DesktopChunks):
        send = self.send
        try:
            while data := await desktop.read():
                self.bytes_to_client += len(data)
                await send({"type": "websocket.send", "bytes": data})
        except (ConnectionError, OSError):
            pass
        await self._close(*self.desktop_end)

    async def _enforce_time_limits(self, limits: console_sessions.ConsoleLimits):
        """Close the console after `idle_timeout_s` without input or `max_session_s` in all;
        warn in the page a few minutes before the idle close (input in between cancels it)."""
        idle = limits.idle_timeout_s if self.watches_input else None
        longest = limits.max_session_s
        if idle is None and longest is None:
            return
        warn_before = min(IDLE_WARNING_S, idle / 5) if idle else 0
        warned_for_input_at = None
        consequence = "your session will be logged off" if limits.idle_ends_session else "this console closes"
        while True:
            now = time.monotonic()
            deadlines = []
            if longest is not None:
                if now >= self.opened + longest:
                    return await self._close_console_everywhere(
                        CloseCode.SESSION_TOO_LONG, f"Console closed: sessions last at most {_duration(longest)}. "
                        "Reconnect to go on.")
                deadlines.append(self.opened + longest)
            if idle is not None:
                if now >= self.last_input + idle:
                    ended = "Your session was logged off" if limits.idle_ends_session else "Console closed"
                    return await self._close_console_everywhere(
                        CloseCode.IDLE_TIMEOUT, f"{ended} after {_duration(idle)} without input. "
                        + ("Launch again for a new one." if limits.idle_ends_session else "Reconnect to go on."))
                if now >= self.last_input + idle - warn_before and warned_for_input_at != self.last_input:
                    warned_for_input_at = self.last_input
                    left = self.last_input + idle - now
                    await self._notice(f"No keyboard or mouse input for a while: {consequence} in "
                                       f"{_duration(left)} unless you use it.", level="warning")
                deadlines.append(self.last_input + idle if warned_for_input_at == self.last_input
                                 else self.last_input + idle - warn_before)
            await asyncio.sleep(max(0.05, min(deadlines) - now))

    async def _notice(self, text: str, *, level: str = "info"):
        """A message for the person at the console (the page shows it over the screen): a
        text frame, which never reaches the desktop."""
        try:
            await self.send({"type": "websocket.send", "text": "vdi-notice " + json.dumps(
                {"text": text[:500], "level": level})})
        except Exception:  # the browser is gone; the close path cleans up
            pass

    async def _close_console_everywhere(self, code: int, reason: str):
        """A SPICE console is several sockets, maybe in several processes: close them all."""
        if self.target.protocol == "spice":
            layer = get_channel_layer()
            if layer is not None:
                await layer.group_send(console_control.ticket_group(self.target.ticket_id),
                                       {"type": "console.terminate", "code": code, "reason": reason})
        await self._close(code, reason)

    # -- closing from elsewhere: logout, lost entitlement, reset ------------------------------
    async def _follow_control_messages(self, target: ConsoleTarget):
        try:
            await self._receive_control_messages(target)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Without its control channel a console could not be closed by a logout: close it
            # now (1012: the page reconnects with a fresh ticket, which checks everything again).
            log.exception("console control channel failed: session=%s", self.session_id)
            await self._close(CloseCode.RECONNECT, "The console lost its control channel; reconnecting.")

    async def _recheck_periodically(self, target: ConsoleTarget):
        session_key = self.session_key

        def still_allowed_and_alive():
            # The session row's sign of life: without it the broker takes this gateway for dead.
            last_input_at = datetime.fromtimestamp(time.time() - (time.monotonic() - self.last_input), timezone.utc)
            if self.session_id is not None and not console_sessions.touch_console_session(
                    session_id=self.session_id, last_input_at=last_input_at):
                return ConsoleRefused(CloseCode.RECONNECT, "The broker closed this console's record; reconnecting.")
            return tickets.console_still_allowed(
                user_id=target.user_id, desktop_id=target.desktop_id, session_key=session_key)

        while True:
            # In case a "close" message from a logout or a lost entitlement never arrived.
            await asyncio.sleep(settings.VDI_CONSOLE_RECHECK_SECONDS)
            try:
                refusal = await in_a_database_thread(still_allowed_and_alive)()
            except Exception:  # the database is away: keep the console, try again next time
                log.warning("console re-check failed: session=%s", self.session_id, exc_info=True)
                continue
            if refusal is not None:
                log.info("console closed on re-check: session=%s code=%s", self.session_id, refusal.code)
                return await self._close(refusal.code, refusal.reason)

    async def _join_control_groups(self, target: ConsoleTarget):
        layer = get_channel_layer()
        if layer is None:
            return
        groups = [
            console_control.desktop_group(target.desktop_id),
            console_control.user_group(target.user_id),
            console_control.login_session_group(self.session_key),
            console_control.ticket_group(target.ticket_id),
        ]
        try:
            self.channel_name = await layer.new_channel()
            await asyncio.gather(*(layer.group_add(group, self.channel_name) for group in groups))
        except Exception as exc:
            # A console that cannot hear a logout must not open (1012: the page tries again).
            log.warning("console could not join its control groups: desktop=%s: %s", target.desktop_id, exc)
            raise ConsoleRefused(CloseCode.RECONNECT, "The console could not reach its control channel; reconnecting.") from exc
        finally:
            self.groups_joined = groups if self.channel_name else []

    async def _receive_control_messages(self, target: ConsoleTarget):
        layer = get_channel_layer()
        if layer is None or self.channel_name is None:
            return
        # A logout between the ticket check and joining the groups sent its message to nobody.
        if not await in_a_database_thread(login_session_exists)(self.session_key):
            await self._close(CloseCode.NOT_LOGGED_IN, "You logged out.")
            return
        while True:
            message = await layer.receive(self.channel_name)
            if message.get("type") == "console.terminate":
                log.info("console closed by the broker: session=%s code=%s", self.session_id, message["code"])
                await self._close(message["code"], message["reason"])
                return
            if message.get("type") == "console.notice" and self.counts_as_console:
                await self._notice(str(message.get("text", "")), level=str(message.get("level", "info")))
            if message.get("type") == "console.moving":
                # The desktop is being live-migrated: when its old QEMU goes, the page must
                # reconnect (to the new host, with a fresh ticket), not give up.
                self.desktop_end = (CloseCode.RECONNECT, "Your desktop moved to another server; reconnecting.")
                if self.counts_as_console:
                    await self._notice(str(message.get("text", "")))

    # -- closing ------------------------------------------------------------------------------
    def _note_browser_left(self, event: dict):
        """How the browser left, for its session row: a close frame's code, or 1006 when it
        vanished without one (killed, crashed, its network gone and its pings unanswered)."""
        code = event.get("code") or 1005
        if code == 1006:
            self.browser_left = (code, "The browser went away without closing the console.")
        else:
            self.browser_left = (code, "closed by the browser")

    async def _close(self, code: int, reason: str):
        if self.closed_with is not None:
            return
        self.closed_with = (code, reason)
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:  # the browser went first; nothing to tell it
            pass
        if self.guest_writer is not None:
            self.guest_writer.close()

    async def _clean_up(self):
        current = asyncio.current_task()
        others = [task for task in self.tasks if task is not current]
        for task in others:
            task.cancel()
        if others:
            # channels_redis finishes its in-flight blocking read before a cancelled receive
            # returns (seconds): do not make the session row and the groups wait for that.
            await asyncio.wait(others, timeout=0.5)
        if self.guest_writer is not None:
            self.guest_writer.close()
        if self.groups_joined:
            layer = get_channel_layer()
            for group in self.groups_joined:
                try:
                    await layer.group_discard(group, self.channel_name)
                except Exception:  # Redis away: the group entry expires on its own
                    log.warning("could not leave console group %s", group)
        if self.session_id is not None:
            code, reason = self.closed_with or self.browser_left
            await in_a_database_thread(console_sessions.close_console_session)(
                session_id=self.session_id, code=code, reason=reason,
                bytes_to_client=self.bytes_to_client + (self.desktop.sent_directly if self.desktop else 0),
                bytes_to_desktop=self.bytes_to_desktop)
            log.info("console closed: session=%s code=%s", self.session_id, code)
