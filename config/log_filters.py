"""Logging filters. Console tickets travel in the websocket URL's query string, and uvicorn
logs each websocket handshake with its path: scrub the ticket before any handler sees it. The
same goes for single sign-on's authorization codes and ID token hints in URLs."""

import logging
import re

# `ticket=` in our gateway's URLs, `token=` in websockify's; `code=` (a URL parameter only, not
# a console close code) and `id_token_hint=` in single sign-on's.
_TICKET = re.compile(r"((?:ticket|token|id_token_hint)=|[?&]code=)[^&\s\"']+")
_MAY_HOLD_A_SECRET = re.compile(r"ticket=|token=|hint=|code=")


class ScrubConsoleTickets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):  # a structlog event: scrub_secrets below sees it whole
            return True
        message = record.getMessage()
        if "ticket=" in message or "token=" in message or "code=" in message or "hint=" in message:
            record.msg, record.args = _TICKET.sub(r"\1[redacted]", message), ()
        return True


# Keys whose values never reach a log line, whatever logged them (a structlog call with
# password=..., an `extra` dict, a header dict).
# (`ticket_id`, a database id, is not a secret; `ticket` and `console_token` are.)
_SECRET_KEYS = re.compile(r"(.*_)?(password|passwd|secret|token|ticket|authorization|cookie|credentials?|api_?key)",
                          re.IGNORECASE)


def _scrubbed(value):
    if isinstance(value, str):
        return _TICKET.sub(r"\1[redacted]", value) if _MAY_HOLD_A_SECRET.search(value) else value
    if isinstance(value, dict):
        return {k: "[redacted]" if isinstance(k, str) and _SECRET_KEYS.fullmatch(k) else _scrubbed(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    # Any other object is rendered as its text (django.request logs the request object itself,
    # whose text is its URL with the query): scrub that text.
    text = str(value)
    return _TICKET.sub(r"\1[redacted]", text) if _MAY_HOLD_A_SECRET.search(text) else value


def scrub_secrets(logger, method_name, event_dict):
    """structlog processor, the last before a line is rendered (config/logs.py): tickets in
    any string (a URL with its query) and the values of secret-sounding keys are redacted."""
    return _scrubbed(event_dict)
