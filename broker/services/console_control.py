"""Closing open consoles from anywhere (a web request, a worker, a signal).

Every gateway process puts each console websocket in channel-layer groups for its desktop,
its user and its login session; a message to a group closes those sockets wherever they are
served. Only this small control message crosses the channel layer, never console bytes.
"""

import hashlib

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def desktop_group(desktop_id: int) -> str:
    return f"console.desktop.{desktop_id}"


def user_group(user_id: int) -> str:
    return f"console.user.{user_id}"


def login_session_group(session_key: str) -> str:
    # Group names are visible in Redis; the session key is a credential, so only its hash.
    return f"console.session.{hashlib.sha256(session_key.encode()).hexdigest()[:32]}"


def close_consoles(*, group: str, code: int, reason: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    async_to_sync(layer.group_send)(group, {"type": "console.terminate", "code": code, "reason": reason})
