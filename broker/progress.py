"""Launch progress, announced as it happens: every desktop state change is published (after
commit) to a channel-layer group of that desktop, where the launch page's websocket
(portal/consumers.py) listens. The page sees each step the moment it happens, and a logon storm
of waiting pages costs no polling. Only a "look again" nudge crosses Redis; the page's consumer
reads the desktop itself, for its own user only.
"""

import logging

from django.db import transaction

log = logging.getLogger(__name__)


def progress_group(desktop_id: int) -> str:
    return f"launch.progress.{desktop_id}"


def announce_progress_on_commit(desktop_id: int) -> None:
    transaction.on_commit(lambda: _announce(desktop_id))


def _announce(desktop_id: int) -> None:
    from .console.control import send_to_group

    try:
        send_to_group(progress_group(desktop_id), {"type": "launch.progress"})
    except Exception as exc:  # Redis away: the page falls back to asking the portal itself
        log.warning("launch progress of desktop %s not announced: %s", desktop_id, exc)
