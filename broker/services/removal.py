"""Deleting a desktop at an admin's word: power off, remove domain and disk (the worker does it;
the row stays as history, in state `deleted`). What the admin's "Delete" action does."""

from ..enqueue import enqueue_after_commit
from ..models import Desktop, DesktopState

S = DesktopState


def request_desktop_deletion(*, desktop: Desktop, actor=None, reason: str = "deletion requested by admin") -> bool:
    """Move the desktop to `deleting` and send its deletion to the worker. False when it is
    deleted already (or another writer moved it first); a desktop already deleting is sent
    again (a lost task)."""
    if desktop.state == S.DELETED:
        return False
    if desktop.pool.is_farm:  # a session: its agent ends it (a deletion task knows no session host)
        from .farm_sessions import log_off_session

        log_off_session(session=desktop, actor=actor, reason=reason)
        return True
    if desktop.state != S.DELETING and not desktop.transition(S.DELETING, message=reason, actor=actor):
        return False
    queue = desktop.host.task_queue if desktop.host_id else None
    enqueue_after_commit("broker.tasks.delete_desktop_task", desktop.pk, queue=queue)
    return True
