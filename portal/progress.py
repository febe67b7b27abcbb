"""What the launch page shows: the steps of getting a desktop ready, and where it stands."""

from broker.models import Desktop, DesktopState

S = DesktopState
STEPS = [
    (S.QUEUED, "Queued for a worker"),
    (S.CLONING, "Cloning the disk from the golden image"),
    (S.STARTING, "Starting the virtual machine"),
    (S.RUNNING, "Ready"),
]
STEP_INDEX = {state: i for i, (state, _label) in enumerate(STEPS)}
# Where a desktop in another state sits in the step list.
STEP_INDEX.update({S.STOPPED: STEP_INDEX[S.STARTING], S.STOPPING: STEP_INDEX[S.STARTING],
                   S.RECOMPOSING: STEP_INDEX[S.CLONING]})

NEXT_STEP_HINT = {
    S.FAILED: "Press Launch to try again. If it fails again, tell your administrator and quote the error.",
    S.STOPPING: "The desktop is shutting down; press Launch again in a few seconds.",
    S.DELETING: "The desktop is being deleted; press Launch for a new one in a few seconds.",
}


def desktop_progress(desktop: Desktop) -> dict:
    current = STEP_INDEX.get(desktop.state)
    steps = []
    for i, (state, label) in enumerate(STEPS):
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
    }
