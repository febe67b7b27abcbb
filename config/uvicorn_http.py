"""uvicorn's h11 HTTP protocol, with a deadline for each request's head.

    uvicorn ... --http config.uvicorn_http:H11ProtocolWithHeadTimeout

uvicorn closes an idle keep-alive connection (--timeout-keep-alive) but waits for ever for a
request whose head arrives slowly or never completes: a few hundred half-sent requests hold as
many sockets (slowloris). Here a request head must be complete within HEAD_TIMEOUT_S of its
connection opening, or of the previous response; otherwise the connection is closed.
Everything else is uvicorn's own code.
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .env_numbers import env_float

HEAD_TIMEOUT_S = env_float("VDI_HTTP_HEAD_TIMEOUT_SECONDS", 10.0, positive=True)


class H11ProtocolWithHeadTimeout(H11Protocol):
    head_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        # A request whose head is complete gets a new scope: the timer compares them.
        self.head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_deadline, self.scope)

    def _head_deadline(self, scope_when_armed) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return  # closed, upgraded to a websocket, or inside a request: not waiting for a head
        if self.scope is scope_when_armed:
            self.transport.close()  # no complete request head in time
        else:
            self._arm_head_timer()  # a request was served since: time the next head from now
