"""What the launch page shows: the steps of getting a desktop ready, and where it stands."""

from broker import selectors
from broker.readiness import why_not_ready
from broker.models import Desktop, DesktopState

S = DesktopState
STEPS = [
    (S.QUEUED, "Queued for a worker"),
    (S.CLONING, "Cloning the disk from the golden image"),
    (S.STARTING, "Starting the virtual machine"),
    (S.RUNNING, "Ready"),
]
# A farm session: waiting for a session host with room, then the logon on it.
SESSION_STEPS = [
    (S.QUEUED, "Waiting for a session host"),
    (S.STARTING, "Starting your session"),
    (S.RUNNING, "Ready"),
]
# Where a desktop in another state sits in the step list.
OTHER_STATES = {S.STOPPED: S.STARTING, S.STOPPING: S.STARTING, S.RECOMPOSING: S.CLONING, S.RESTORING: S.STARTING}

NEXT_STEP_HINT = {
    S.FAILED: "Press Launch to try again. If it fails again, tell your administrator and quote the error.",
    S.STOPPING: "The desktop is shutting down; press Launch again in a few seconds.",
    S.DELETING: "The desktop is being deleted; press Launch for a new one in a few seconds.",
}


def _labels(desktop: Desktop) -> list[tuple[str, str]]:
    if not desktop.pool.is_farm:
        return STEPS
    place = selectors.place_in_queue(desktop=desktop)
    waiting = "Waiting for a session host"
    if place is not None:
        waiting += f" (you are number {place} in the queue)" if place > 1 else " (you are next)"
    starting = f"Starting your session on {desktop.host.name}" if desktop.host_id else "Starting your session"
    return [(S.QUEUED, waiting), (S.STARTING, starting), (S.RUNNING, "Ready")]


def desktop_progress(desktop: Desktop) -> dict:
    labels = _labels(desktop)
    index = {state: i for i, (state, _label) in enumerate(labels)}
    current = index.get(OTHER_STATES.get(desktop.state, desktop.state))
    steps = []
    for i, (state, label) in enumerate(labels):
        if current is None:
            status = "pending"
        elif i < current or desktop.state == S.RUNNING:
            status = "done"
        elif i == current:
            status = "active"
        else:
            status = "pending"
        steps.append({"state": state, "label": label, "status": status})
    return {
        "id": desktop.pk,
        "state": desktop.state,
        "state_label": desktop.get_state_display(),
        "ready": desktop.state == S.RUNNING,
        "failed": desktop.state == S.FAILED,
        "error": desktop.last_error if desktop.state == S.FAILED else "",
        "hint": NEXT_STEP_HINT.get(desktop.state, ""),
        "steps": steps,
        "since": desktop.state_changed_at.isoformat(),
        "place_in_queue": selectors.place_in_queue(desktop=desktop),
        "why": _why(desktop),
    }


def _why(desktop: Desktop) -> dict | None:
    """Why it is not ready yet, in the employee's words: never host names, errors or the
    guest's serial log (the admin sees those)."""
    reason = why_not_ready(desktop)
    return reason.for_employee() if reason else None
