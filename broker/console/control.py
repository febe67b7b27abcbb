"""Closing open consoles from anywhere (a web request, a worker, a signal).

Every gateway process puts each console websocket in channel-layer groups for its desktop,
its user and its login session; a message to a group closes those sockets wherever they are
served. Only this small control message crosses the channel layer, never console bytes.
"""

import asyncio
import hashlib
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def desktop_group(desktop_id: int) -> str:
    return f"console.desktop.{desktop_id}"


def user_group(user_id: int) -> str:
    return f"console.user.{user_id}"


def login_session_group(session_key: str) -> str:
    # Group names are visible in Redis; the session key is a credential, so only its hash.
    return f"console.session.{hashlib.sha256(session_key.encode()).hexdigest()[:32]}"


def ticket_group(ticket_id: int) -> str:
    """The sockets of one console: SPICE opens one per channel."""
    return f"console.ticket.{ticket_id}"


def close_consoles(*, group: str, code: int, reason: str) -> None:
    send_to_group(group, {"type": "console.terminate", "code": int(code), "reason": reason})


def show_notice(*, group: str, text: str, level: str = "info") -> None:
    """A message shown over the console in the page of everyone in `group` (an admin's word, a
    warning before the session ends); the console stays open."""
    send_to_group(group, {"type": "console.notice", "text": text, "level": level})


def send_to_group(group: str, message: dict) -> None:
    """A message to every websocket in `group`, from any thread (with or without a loop)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(layer.group_send)(group, message)
        return
    # Called from a thread that runs an event loop (an async view, a test driving a browser):
    # async_to_sync refuses there, so send from a thread of its own and wait for it.
    sender = threading.Thread(target=async_to_sync(layer.group_send), args=(group, message))
    sender.start()
    sender.join()
