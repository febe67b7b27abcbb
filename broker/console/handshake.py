"""What a console websocket may cost before and besides its relay.

- A client with no login, or from a page of another origin, never gets an open websocket: the
  gateway refuses its handshake with HTTP 403 (body: the close code and reason, as websockify's
  plugin does), so it cannot send frames, pings or floods to a socket the server holds open.
  Refusals of a logged-in user's ticket (used, expired, too many consoles ...) still open the
  websocket and close it with their code, so the page can show the reason.
- The page's text pings ("vdi-ping") are answered at most a few per second: each answer is a
  write to the browser, and a page pings every 2 s.
"""

from __future__ import annotations

import time

from .close_codes import CloseCode, ConsoleRefused

REFUSED_BEFORE_OPENING = {CloseCode.NOT_LOGGED_IN, CloseCode.ORIGIN_REFUSED}


def refused_before_opening(refused: ConsoleRefused) -> bool:
    return refused.code in REFUSED_BEFORE_OPENING


async def refuse_before_opening(scope, send, refused: ConsoleRefused) -> None:
    """Answer the websocket handshake with HTTP 403 instead of opening it."""
    if "websocket.http.response" not in scope.get("extensions", {}):  # an ASGI server without it
        await send({"type": "websocket.close", "code": refused.code})
        return
    body = f"{int(refused.code)} {refused.reason}".encode()
    await send({"type": "websocket.http.response.start", "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "websocket.http.response.body", "body": body})


class PongBudget:
    """A token bucket for answers to the page's pings: a burst of BURST, then PER_SECOND."""

    BURST = 5
    PER_SECOND = 2.0

    def __init__(self):
        self.tokens, self.at = float(self.BURST), time.monotonic()

    def may_answer(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.BURST, self.tokens + (now - self.at) * self.PER_SECOND)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
