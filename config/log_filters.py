"""Logging filters. Console tickets travel in the websocket URL's query string, and uvicorn
logs each websocket handshake with its path: scrub the ticket before any handler sees it."""

import logging
import re

# `ticket=` in our gateway's URLs, `token=` in websockify's.
_TICKET = re.compile(r"((?:ticket|token)=)[^&\s\"']+")


class ScrubConsoleTickets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "ticket=" in message or "token=" in message:
            record.msg, record.args = _TICKET.sub(r"\1[redacted]", message), ()
        return True
