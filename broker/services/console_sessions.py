"""The console session rows the gateway keeps: opened on connect, closed on disconnect."""

from django.utils import timezone

from ..models import ConsoleSession


def open_console_session(*, user_id: int, desktop_id: int, protocol: str, client_address: str | None) -> int:
    session = ConsoleSession.objects.create(
        user_id=user_id, desktop_id=desktop_id, protocol=protocol, client_address=client_address
    )
    return session.pk


def close_console_session(*, session_id: int, code: int | None, reason: str, bytes_to_client: int,
                          bytes_to_desktop: int) -> None:
    ConsoleSession.objects.filter(pk=session_id, closed_at__isnull=True).update(
        closed_at=timezone.now(),
        close_code=code,
        close_reason=reason[:200],
        bytes_to_client=bytes_to_client,
        bytes_to_desktop=bytes_to_desktop,
    )
