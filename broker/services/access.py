"""What happens to a user's desktops when their entitlements change.

Losing the entitlement to a pool closes the user's consoles on it at once and schedules the
desktop's deletion after the pool's grace period; regaining it in time cancels the deletion.
Called on commit by the signals in broker/signals.py, whatever changed the entitlement: the
admin, the directory sync, a group membership edit.
"""

import logging

from django.db import transaction
from django.utils import timezone

from .. import selectors
from ..models import Desktop
from ..models.desktops import LIVE_STATES
from ..console import control as console_control
from ..console.close_codes import CloseCode

log = logging.getLogger(__name__)


def revoke_lost_access(*, user) -> list[Desktop]:
    """Hold every live desktop of `user` in a pool they may no longer launch; return them."""
    entitled = set(selectors.entitled_pools(user=user).values_list("pk", flat=True))
    desktops = Desktop.objects.filter(user=user, state__in=LIVE_STATES).select_related("pool")
    held = []
    now = timezone.now()
    for desktop in desktops:
        if desktop.pool_id in entitled:
            if desktop.delete_after is not None:
                Desktop.objects.filter(pk=desktop.pk).update(delete_after=None)
                desktop.note("access regained: scheduled deletion cancelled")
            continue
        console_control.close_consoles(
            group=console_control.desktop_group(desktop.pk),
            code=CloseCode.NOT_ENTITLED,
            reason="Your access to this desktop was withdrawn.",
        )
        if desktop.pool.is_farm:
            # A shared session keeps nothing worth a grace period (files stay in the home).
            from .farm_sessions import log_off_session

            log_off_session(session=desktop, reason=f"{user.get_username()} lost access to {desktop.pool}")
            continue
        if desktop.delete_after is None:
            delete_after = now + desktop.pool.revoked_desktop_grace
            Desktop.objects.filter(pk=desktop.pk, delete_after__isnull=True).update(delete_after=delete_after)
            desktop.note(f"{user.get_username()} lost access to {desktop.pool}; desktop kept until "
                         f"{delete_after:%Y-%m-%d %H:%M} UTC, then deleted")
            desktop.delete_after = delete_after
        held.append(desktop)
    return held


def revoke_lost_access_on_commit(*, user_ids) -> None:
    from django.contrib.auth import get_user_model

    ids = sorted(set(user_ids))

    def run():
        # Only users who hold a desktop can lose one: a directory sync adding thousands of
        # memberships costs one query here, not two per membership.
        holders = get_user_model().objects.filter(pk__in=ids, desktops__state__in=LIVE_STATES).distinct()
        for user in holders:
            revoke_lost_access(user=user)

    transaction.on_commit(run)


def desktops_past_their_hold():
    return Desktop.objects.filter(delete_after__lte=timezone.now(), state__in=LIVE_STATES)
