"""Logging filters. Console tickets travel in the websocket URL's query string, and uvicorn
logs each websocket handshake with its path: scrub the ticket before any handler sees it. The
same goes for single sign-on's authorization codes and ID token hints in URLs."""

import logging
import re

# `ticket=` in our gateway's URLs, `token=` in websockify's; `code=` (a URL parameter only, not
# a console close code) and `id_token_hint=` in single sign-on's.
_TICKET = re.compile(r"((?:ticket|token|id_token_hint)=|[?&]code=)[^&\s\"']+")


class ScrubConsoleTickets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "ticket=" in message or "token=" in message or "code=" in message or "hint=" in message:
            record.msg, record.args = _TICKET.sub(r"\1[redacted]", message), ()
        return True
