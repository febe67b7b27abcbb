"""Authorization codes and ID token hints in URLs never reach a log line (config/log_filters.py)."""

import logging

from config.log_filters import ScrubConsoleTickets


def scrubbed(message: str) -> str:
    record = logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, (), None)
    ScrubConsoleTickets().filter(record)
    return record.getMessage()


def test_it_scrubs_the_authorization_code_and_the_id_token_hint():
    assert scrubbed("GET /oidc/callback/?state=s1&code=the-code-1 403") == \
        "GET /oidc/callback/?state=s1&code=[redacted] 403"
    assert scrubbed("GET /session/end?id_token_hint=eyJhbGc.eyJzdWIi.sig&client_id=vdi") == \
        "GET /session/end?id_token_hint=[redacted]&client_id=vdi"
    assert scrubbed("POST /oidc/backchannel-logout/ logout_token=eyJ.x.y") == \
        "POST /oidc/backchannel-logout/ logout_token=[redacted]"


def test_it_leaves_console_close_codes_alone():
    assert scrubbed("console closed on re-check: session=7 code=4401") == \
        "console closed on re-check: session=7 code=4401"
