"""Reads: who may launch what, which desktop a user has, where a new desktop goes."""

from django.db.models import Count, Q

from .models import Desktop, Host, Pool
from .models.desktops import LIVE_STATES


def entitled_pools(*, user):
    """Enabled pools the user may launch, directly or through one of their groups."""
    if not user.is_authenticated or not user.is_active:
        return Pool.objects.none()
    return (
        Pool.objects.filter(is_enabled=True)
        .filter(Q(entitlements__user=user) | Q(entitlements__group__in=user.groups.all()))
        .distinct()
        .select_related("image")
    )


def is_entitled(*, user, pool) -> bool:
    return entitled_pools(user=user).filter(pk=pool.pk).exists()


def live_desktop_of(*, user, pool) -> Desktop | None:
    return (
        Desktop.objects.filter(user=user, pool=pool, state__in=LIVE_STATES)
        .select_related("host", "pool", "image_version")
        .first()
    )


def desktops_by_pool(*, user) -> dict[int, Desktop]:
    desktops = Desktop.objects.filter(user=user, state__in=LIVE_STATES).select_related("pool")
    return {d.pool_id: d for d in desktops}


def pick_host(*, pool) -> Host | None:
    """The pool's pinned host if it is enabled, else the enabled host with fewest live desktops."""
    if pool.host_id:
        return pool.host if pool.host.is_enabled else None
    return (
        Host.objects.filter(is_enabled=True)
        .annotate(load=Count("desktops", filter=Q(desktops__state__in=LIVE_STATES)))
        .order_by("load", "name")
        .first()
    )
