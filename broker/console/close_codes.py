"""How a console ends: the websocket close codes the gateway sends and the page understands.

4400s: refused or closed for the user (the page shows the reason and stops); 4500s: the
desktop side; 1006 and 1012 are WebSocket's own "abnormal closure" and "service restart",
which the page answers by reconnecting with a fresh ticket (static/portal/console.js).
"""

from enum import IntEnum


class CloseCode(IntEnum):
    GATEWAY_GONE = 1006  # the broker closed the row of a console whose gateway died
    RECONNECT = 1012  # the console lost what keeps it safe (control channel, row): try again
    NOT_LOGGED_IN = 4401
    ORIGIN_REFUSED = 4403
    TICKET_INVALID = 4404
    TICKET_EXPIRED = 4408
    TICKET_USED = 4409
    TICKET_NOT_YOURS = 4410
    NOT_ENTITLED = 4411
    DESKTOP_NOT_RUNNING = 4412
    SPICE_CHANNEL_REFUSED = 4413
    TOO_MANY_CONSOLES_OF_USER = 4429
    TOO_MANY_CONSOLES_ON_DESKTOP = 4430
    IDLE_TIMEOUT = 4431
    SESSION_TOO_LONG = 4432
    DESKTOP_CLOSED = 4500
    DESKTOP_RESET = 4501
    DESKTOP_UNREACHABLE = 4502
    DESKTOP_LOGIN_FAILED = 4503


class ConsoleRefused(Exception):
    """The gateway must close the websocket with `code` and show `reason` in the page."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = int(code), reason
