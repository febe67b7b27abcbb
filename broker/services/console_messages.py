"""A message from an admin to the user of a desktop, shown in their open console."""

from ..console import control
from ..models import Desktop, DesktopState

MAX_MESSAGE_CHARS = 500


class MessageRefused(Exception):
    pass


def send_console_message(*, desktop: Desktop, text: str, actor) -> None:
    """Show `text` in the desktop's open consoles and write it in its history."""
    text = (text or "").strip()
    if not text:
        raise MessageRefused("Write the message to send.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise MessageRefused(f"A message is at most {MAX_MESSAGE_CHARS} characters.")
    if desktop.state == DesktopState.DELETED:
        raise MessageRefused(f"{desktop.name} is deleted: nobody would read it.")
    control.show_notice(group=control.desktop_group(desktop.pk),
                        text=f"Message from {actor.get_username()}: {text}")
    desktop.note(f"message sent to the console: {text[:200]}", actor=actor)
