"""Rolling a dedicated pool onto a new golden image version while keeping users' data disks."""


from ..models import Desktop, DesktopState
from ..enqueue import enqueue_for_host

S = DesktopState


def recompose_pool(*, pool, actor=None) -> int:
    """Rebuild the system disk of every desktop of `pool` not on the current version."""
    if pool.is_farm:
        return 0  # sessions are not built from images
    version = pool.image.current_version()
    count = 0
    stale = Desktop.objects.select_related("host").filter(pool=pool, state__in=(S.RUNNING, S.STOPPED, S.FAILED)).exclude(
        image_version=version)
    for desktop in stale:
        if desktop.transition(S.RECOMPOSING, expected={S.RUNNING, S.STOPPED, S.FAILED},
                              message=f"recompose onto {version} requested", actor=actor):
            enqueue_for_host("broker.tasks.recompose_desktop_task", desktop.pk, host=desktop.host)
            count += 1
    return count
