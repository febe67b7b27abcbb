"""The console websocket: check the ticket, then copy bytes between browser and desktop.

It never calls libvirt and writes nothing but the console session row. Backpressure both
ways: the guest is read only after the previous chunk was handed to the browser's socket
(uvicorn's `websockets-sansio` implementation waits while its write buffer is full), and the browser's messages are
handled one at a time, each awaiting the guest socket's drain.
"""

import asyncio
import logging
import socket
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from ..services import console_control, console_sessions, tickets
from ..services.tickets import ConsoleRefused
from .origin import is_allowed_origin, websocket_origin

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 5
DESKTOP_CLOSED = 4500


class ConsoleConsumer(AsyncWebsocketConsumer):
    guest_reader: asyncio.StreamReader | None = None
    guest_writer: asyncio.StreamWriter | None = None
    pump: asyncio.Task | None = None
    session_id: int | None = None
    groups_joined: tuple[str, ...] = ()

    async def connect(self):
        self.bytes_to_client = self.bytes_to_desktop = 0
        self.closed_with = None
        offered = self.scope.get("subprotocols") or []
        await self.accept(subprotocol="binary" if "binary" in offered else None)
        try:
            target = await self._authorise()
            await self._open_guest(target)
        except ConsoleRefused as refused:
            log.info(
                "console refused: desktop=%s user=%s code=%s reason=%s",
                self.scope["url_route"]["kwargs"].get("desktop_id"),
                getattr(self.scope.get("user"), "pk", None),
                refused.code,
                refused.reason,
            )
            await self._close(refused.code, refused.reason)
            return
        self.session_id = await database_sync_to_async(console_sessions.open_console_session)(
            user_id=target.user_id,
            desktop_id=target.desktop_id,
            protocol=target.protocol,
            client_address=(self.scope.get("client") or [None])[0],
        )
        log.info("console opened: desktop=%s user=%s protocol=%s", target.desktop_id, target.user_id,
                 target.protocol)
        await self._join_control_groups(target)
        self.pump = asyncio.create_task(self._pump_guest_to_browser())

    async def _join_control_groups(self, target: tickets.ConsoleTarget):
        """So that logout, a lost entitlement or a reset can close this socket from elsewhere."""
        if self.channel_layer is None:
            return
        self.groups_joined = (
            console_control.desktop_group(target.desktop_id),
            console_control.user_group(target.user_id),
            console_control.login_session_group(self.scope["session"].session_key),
        )
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def console_terminate(self, event):
        log.info("console closed by the broker: session=%s code=%s", self.session_id, event["code"])
        await self._close(event["code"], event["reason"])

    async def _authorise(self) -> tickets.ConsoleTarget:
        if not is_allowed_origin(self.scope):
            raise ConsoleRefused(tickets.ORIGIN_REFUSED, "This page's origin may not open consoles.")
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("ticket") or [""])[0]
        session = self.scope.get("session")
        return await database_sync_to_async(tickets.redeem_console_ticket)(
            token=token,
            user=self.scope.get("user"),
            session_key=getattr(session, "session_key", None),
            origin=websocket_origin(self.scope),
            desktop_id=int(self.scope["url_route"]["kwargs"]["desktop_id"]),
        )

    async def _open_guest(self, target: tickets.ConsoleTarget):
        try:
            self.guest_reader, self.guest_writer = await asyncio.wait_for(
                asyncio.open_connection(target.address, target.port, limit=CHUNK), CONNECT_TIMEOUT_S
            )
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("console of desktop %s unreachable: %s", target.desktop_id, exc)
            raise ConsoleRefused(tickets.DESKTOP_UNREACHABLE, "The desktop's console does not answer.") from exc
        sock = self.guest_writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def _pump_guest_to_browser(self):
        try:
            while True:
                data = await self.guest_reader.read(CHUNK)
                if not data:
                    break
                self.bytes_to_client += len(data)
                await self.send(bytes_data=data)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            return
        await self._close(DESKTOP_CLOSED, "The desktop closed the console (it may have powered off).")

    async def receive(self, text_data=None, bytes_data=None):
        if self.guest_writer is None:
            return
        data = bytes_data if bytes_data is not None else (text_data or "").encode()
        self.bytes_to_desktop += len(data)
        self.guest_writer.write(data)
        try:
            await self.guest_writer.drain()
        except (ConnectionError, OSError):
            await self._close(DESKTOP_CLOSED, "The desktop closed the console.")

    async def _close(self, code: int, reason: str):
        if self.closed_with is None:
            self.closed_with = (code, reason)
            await self.close(code=code, reason=reason)

    async def disconnect(self, code):
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
        if self.guest_writer is not None:
            self.guest_writer.close()
        if self.session_id is not None:
            sent_code, reason = self.closed_with or (code, "closed by the browser")
            await database_sync_to_async(console_sessions.close_console_session)(
                session_id=self.session_id,
                code=sent_code,
                reason=reason,
                bytes_to_client=self.bytes_to_client,
                bytes_to_desktop=self.bytes_to_desktop,
            )
            log.info("console closed: session=%s code=%s", self.session_id, sent_code)
