"""The audit log: one row per login, failure, launch, admin change and directory change."""

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models import Max

from ..http import client_address_of
from ..models import AuditEvent

Kind = AuditEvent.Kind


def record_event(*, kind: str, request=None, actor=None, username: str = "", target: str = "", message: str = "",
                 client_address: str | None = None) -> AuditEvent:
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        actor = user if getattr(user, "is_authenticated", False) else None
    if actor is not None and not username:
        username = actor.get_username()
    if client_address is None and request is not None:
        client_address = client_address_of(request)
    return AuditEvent.objects.create(
        kind=kind,
        actor=actor,
        username=(username or "")[:150],
        client_address=client_address,
        target=str(target)[:255],
        message=message,
    )


def record_launch(*, request, desktop) -> AuditEvent:
    return record_event(kind=Kind.LAUNCH, request=request, target=f"desktop {desktop.name}",
                        message=f"launched {desktop.pool} ({desktop.get_state_display().lower()})")


_ACTIONS = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}


def import_admin_log() -> int:
    """Copy the admin's history rows (every add, change and delete made in the admin) not copied
    yet. Called on each new row, and before the audit log is shown: the admin's "delete
    selected" writes its rows in bulk, which sends no signal."""
    last = AuditEvent.objects.aggregate(last=Max("log_entry_id"))["last"] or 0
    # Look a little behind the last copied row: a transaction that took its id earlier may have
    # committed later. Rows copied already are skipped by the unique log_entry_id.
    entries = LogEntry.objects.filter(pk__gt=max(0, last - 100)).select_related("user", "content_type")
    entries = entries.order_by("pk")[:10000]
    events = []
    for entry in entries:
        content_type = entry.content_type
        what = f"{content_type.app_label}.{content_type.model}" if content_type else "object"
        message = _ACTIONS.get(entry.action_flag, "changed")
        change = entry.get_change_message()
        if change:
            message = f"{message}: {change}"
        events.append(AuditEvent(
            kind=Kind.ADMIN_CHANGE, created_at=entry.action_time, actor=entry.user,
            username=entry.user.get_username()[:150] if entry.user else "",
            target=f"{what} #{entry.object_id} {entry.object_repr}"[:255], message=message, log_entry_id=entry.pk,
        ))
    AuditEvent.objects.bulk_create(events, ignore_conflicts=True)
    return len(events)
