"""Launch: find or create the user's desktop in a pool and get it running."""

import uuid

from django.db import IntegrityError, transaction

from .. import selectors
from ..models import Desktop, DesktopState, Pool
from .errors import LaunchRefused
from .provisioning import desktop_name

S = DesktopState


def launch_desktop(*, user, pool: Pool) -> Desktop:
    """Return the user's desktop in `pool`, enqueueing whatever work gets it to running.

    Idempotent: pressing Launch twice, or in two tabs at once, yields the same desktop and at
    most one provisioning job.
    """
    if not selectors.is_entitled(user=user, pool=pool):
        raise LaunchRefused("You are not entitled to this desktop pool. Ask your administrator for access.")
    desktop = selectors.live_desktop_of(user=user, pool=pool)
    if desktop is None:
        desktop = _create_desktop(user=user, pool=pool)
    elif desktop.state == S.STOPPED:
        if desktop.transition(S.STARTING, expected=S.STOPPED, message="launched by user; powering on", actor=user):
            _enqueue("start_desktop_task", desktop.pk)
    elif desktop.state == S.FAILED:
        if desktop.transition(S.QUEUED, expected=S.FAILED, message="launched again by user; retrying", actor=user,
                              last_error=""):
            _enqueue("provision_desktop_task", desktop.pk)
    elif desktop.state in (S.STOPPING, S.DELETING):
        raise LaunchRefused("Your desktop is shutting down. Wait a few seconds and press Launch again.")
    return desktop


def _create_desktop(*, user, pool: Pool) -> Desktop:
    version = pool.image.current_version()
    if version is None:
        raise LaunchRefused(
            f"The pool's golden image {pool.image} has no published version yet. Tell your administrator."
        )
    host = selectors.pick_host(pool=pool)
    if host is None:
        raise LaunchRefused("No hypervisor host is available for this pool right now. Try again later.")
    try:
        with transaction.atomic():
            desktop = Desktop.objects.create(
                pool=pool,
                user=user,
                host=host,
                image_version=version,
                name=desktop_name(pool=pool, unique=uuid.uuid4().hex[:10]),
                state=S.QUEUED,
            )
            desktop.note(f"requested by {user.get_username()} on {host.name} from {version}", actor=user)
            _enqueue("provision_desktop_task", desktop.pk)
    except IntegrityError:
        # Another launch by the same user won the race; use its desktop.
        desktop = selectors.live_desktop_of(user=user, pool=pool)
        if desktop is None:
            raise
    return desktop


def _enqueue(task_name: str, desktop_id: int) -> None:
    """Send the task once the desktop row is committed, so the worker finds it."""
    from .. import tasks

    task = getattr(tasks, task_name)
    transaction.on_commit(lambda: task.delay(desktop_id))
