"""The session host: shared (SBC) desktop and application sessions on a Linux host, each a
TigerVNC Xvnc display running as the employee's own OS account. What a session agent on
that host calls; no Django here, so the agent runs without the broker's settings."""

from broker.sessionhost.accounts import (
    Account,
    account_name,
    ensure_account,
    remove_account,
)
from broker.sessionhost.errors import SessionHostError
from broker.sessionhost.sessions import (
    HostLoad,
    SessionInfo,
    end_session,
    expire_session_password,
    host_load,
    list_sessions,
    session_pss_mib,
    set_session_password,
    start_session,
)
from broker.sessionhost.vncpasswd import write_vnc_password_file

__all__ = [
    "Account", "HostLoad", "SessionHostError", "SessionInfo", "account_name", "end_session", "ensure_account",
    "expire_session_password",
    "host_load", "list_sessions", "remove_account", "session_pss_mib", "set_session_password", "start_session",
    "write_vnc_password_file",
]
