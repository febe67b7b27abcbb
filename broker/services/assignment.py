"""Launch: give the user their desktop in a pool and get it running.

Dedicated pools keep a desktop per user from the first launch (taken from the spares when
one is ready). Floating pools hand out any ready spare and wipe it when the user is done.
Under a logon storm a desktop goes to exactly one user and a user gets at most one desktop
per pool: claims are conditional UPDATEs (with SKIP LOCKED on PostgreSQL), and the database
refuses a second live desktop for the same user and pool.
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import selectors
from ..models import Desktop, DesktopState, Pool
from .errors import LaunchRefused
from .provisioning import new_desktop
from ..enqueue import enqueue_for_host

S = DesktopState


def launch_desktop(*, user, pool: Pool, application=None, entitlement_checked: bool = False) -> Desktop:
    """Return the user's desktop in `pool`, enqueueing whatever work gets it to running
    (farms: their session of the full desktop or of `application`).

    Idempotent: pressing Launch twice, or in two tabs at once, yields the same desktop and at
    most one provisioning job. `entitlement_checked`: the caller read `pool` from
    selectors.entitled_pools(user=user) just now (the portal's Launch), so it is not asked twice.
    """
    if not entitlement_checked and not selectors.is_entitled(user=user, pool=pool):
        raise LaunchRefused("You are not entitled to this desktop pool. Ask your administrator for access.")
    if pool.is_farm:
        from .farm_sessions import launch_farm_session

        return launch_farm_session(user=user, pool=pool, application=application)
    desktop = selectors.live_desktop_of(user=user, pool=pool)
    if desktop is not None and pool.is_floating and not desktop.host.is_online:
        _abandon_on_offline_host(desktop, user)
        desktop = None
    if desktop is None:
        version = pool.image.current_version()
        desktop = (_claim_spare(user=user, pool=pool, version=version)
                   or _create_for(user=user, pool=pool, version=version))
    return _get_it_running(desktop, user)


def _get_it_running(desktop: Desktop, user) -> Desktop:
    if desktop.state == S.STOPPED:
        if desktop.transition(S.STARTING, expected=S.STOPPED, message="launched; powering on", actor=user):
            _enqueue("start_desktop_task", desktop)
    elif desktop.state == S.FAILED:
        if desktop.transition(S.QUEUED, expected=S.FAILED, message="launched again; retrying", actor=user,
                              last_error=""):
            _enqueue("provision_desktop_task", desktop)
    elif desktop.state in (S.STOPPING, S.DELETING):
        raise LaunchRefused("Your desktop is shutting down. Wait a few seconds and press Launch again.")
    elif desktop.state == S.RESTORING:
        raise LaunchRefused("Your desktop's files are being restored from a backup. Wait a minute and press "
                            "Launch again.")
    return desktop


def _claim_spare(*, user, pool: Pool, version) -> Desktop | None:
    """Assign a ready (or powered-off) spare of `version`, the pool's current image version, to
    `user`, if there is one."""
    for _attempt in range(10):
        try:
            with transaction.atomic():
                spare = (
                    Desktop.objects.select_for_update(skip_locked=True)
                    .filter(pool=pool, user__isnull=True, state__in=(S.RUNNING, S.STOPPED), image_version=version,
                            delete_after__isnull=True)
                    .order_by("-state", "pk")  # running ("running" > "stopped") first
                    .first()
                )
                if spare is None:
                    return None
                # Still a ready spare: the pool may be removing it or powering it down meanwhile.
                assigned_at = timezone.now()
                won = Desktop.objects.filter(pk=spare.pk, user__isnull=True,
                                             state__in=(S.RUNNING, S.STOPPED)).update(
                    user=user, assigned_at=assigned_at
                )
                if won:
                    # The row as the UPDATE left it (it is locked: nothing else changed it).
                    spare.user, spare.pool, spare.assigned_at = user, pool, assigned_at
                    spare.note(f"assigned to {user.get_username()}", actor=user)
                    return spare
        except IntegrityError:
            # The same user's other launch got a desktop a moment ago: use that one.
            return selectors.live_desktop_of(user=user, pool=pool)
    return None


def _create_for(*, user, pool: Pool, version) -> Desktop:
    if version is None:
        raise LaunchRefused(
            f"The pool's golden image {pool.image} has no published version yet. Tell your administrator."
        )
    try:
        with transaction.atomic():
            # Creations in one pool take turns (a row lock on PostgreSQL), so the size check
            # below is exact however many launches arrive at once.
            Pool.objects.select_for_update().filter(pk=pool.pk).first()
            if selectors.live_count(pool=pool) >= pool.max_desktops:
                raise LaunchRefused(
                    f"All {pool.max_desktops} desktops of {pool} are in use. Try again in a few minutes, "
                    "or ask your administrator to enlarge the pool."
                )
            host = selectors.pick_host(pool=pool)
            if host is None:
                raise LaunchRefused("No hypervisor host has room for a new desktop right now. Try again later, "
                                    "or tell your administrator.")
            desktop = new_desktop(pool=pool, host=host, version=version, user=user)
            desktop.note(f"created for {user.get_username()} on {host.name} from {version}", actor=user)
            _enqueue("provision_desktop_task", desktop)
    except IntegrityError:
        # Another launch by the same user won the race; use its desktop.
        desktop = selectors.live_desktop_of(user=user, pool=pool)
        if desktop is None:
            raise
        return desktop
    if selectors.live_count(pool=pool) > pool.max_desktops:
        # Only where there is no row lock (SQLite) can concurrent launches overshoot: step back.
        desktop.transition(S.DELETING, message="pool reached its maximum size during launch")
        Desktop.objects.filter(pk=desktop.pk).update(user=None)
        _enqueue("delete_desktop_task", desktop)
        raise LaunchRefused(f"All {pool.max_desktops} desktops of {pool} are in use. Try again in a few minutes.")
    return desktop


def _abandon_on_offline_host(desktop: Desktop, user) -> None:
    """A floating desktop on a host that stopped answering: the user gets another one; the
    reconciler deletes this one when the host is back."""
    desktop.transition(S.FAILED, message=f"host {desktop.host} is offline; {user.get_username()} moved elsewhere",
                       last_error=f"host {desktop.host} offline")
    Desktop.objects.filter(pk=desktop.pk).update(user=None)


def _enqueue(task_name: str, desktop: Desktop) -> None:
    enqueue_for_host(f"broker.tasks.{task_name}", desktop.pk, host=desktop.host)
