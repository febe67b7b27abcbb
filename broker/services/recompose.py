"""Rolling a dedicated pool onto a new golden image version while keeping users' data disks.

Two ways: `recompose_pool` asks for every stale desktop at once (the pool's maintenance window);
the admin's "Recompose now" is a job (`recompose_job`) that rebuilds a few at a time
(VDI_RECOMPOSE_BATCH), follows them to the end with a progress bar, and may be stopped between
desktops: those being rebuilt finish, the rest stay as they are.
"""

from django.conf import settings

from ..enqueue import enqueue_for_host
from ..models import Desktop, DesktopState

S = DesktopState
RECOMPOSABLE = (S.RUNNING, S.STOPPED, S.FAILED)


def stale_desktops(*, pool):
    version = pool.image.current_version()
    return Desktop.objects.select_related("host").filter(pool=pool, state__in=RECOMPOSABLE).exclude(
        image_version=version)


def request_recompose(*, desktop: Desktop, version, actor=None) -> bool:
    if desktop.transition(S.RECOMPOSING, expected=set(RECOMPOSABLE), message=f"recompose onto {version} requested",
                          actor=actor):
        enqueue_for_host("broker.tasks.recompose_desktop_task", desktop.pk, host=desktop.host)
        return True
    return False


def recompose_pool(*, pool, actor=None) -> int:
    """Rebuild the system disk of every desktop of `pool` not on the current version."""
    if pool.is_farm:
        return 0  # sessions are not built from images
    version = pool.image.current_version()
    return sum(request_recompose(desktop=desktop, version=version, actor=actor)
               for desktop in stale_desktops(pool=pool))


def start_recompose(*, pool, actor=None):
    from .jobs import start_job

    return start_job(kind="pool_recompose", target_key=f"pool:{pool.pk}", target_label=str(pool),
                     started_by=actor, params={"pool_id": pool.pk})


def recompose_job(job, progress):
    """Job runner, one look at a time: the first look lists the stale desktops; each look counts
    those finished and asks for more up to the batch size, unless the admin asked to stop."""
    from ..models import Pool
    from .jobs import FollowUp, cancelled, failed, remember, succeeded

    pool = Pool.objects.select_related("image").filter(pk=job.params["pool_id"]).first()
    if pool is None or pool.is_farm:
        return failed(None, "the pool is gone, or is a farm (nothing to recompose)")
    version = pool.image.current_version()
    if version is None:
        return failed(None, f"the golden image {pool.image} has no published version to recompose onto")
    if "desktop_ids" not in job.params:
        remember(job, desktop_ids=list(stale_desktops(pool=pool).order_by("pk").values_list("pk", flat=True)),
                 requested=[], version_id=version.pk)
    ids, requested = job.params["desktop_ids"], set(job.params["requested"])
    states = dict(Desktop.objects.filter(pk__in=ids).values_list("pk", "state"))
    rebuilding = [pk for pk in requested if states.get(pk) == S.RECOMPOSING]
    stopping = progress.stop_requested()
    if not stopping:
        room = settings.VDI_RECOMPOSE_BATCH - len(rebuilding)
        for desktop in Desktop.objects.select_related("host").filter(pk__in=[pk for pk in ids if pk not in requested])\
                .order_by("pk"):
            if room <= 0:
                break
            requested.add(desktop.pk)  # asked, or no longer needing it (deleted, in use elsewhere): done either way
            if request_recompose(desktop=desktop, version=version, actor=job.started_by):
                rebuilding.append(desktop.pk)
                room -= 1
        requested |= {pk for pk in ids if pk not in states}  # deleted rows
        remember(job, requested=sorted(requested))
    finished = [pk for pk in requested if pk not in rebuilding]
    progress.step(done=len(finished), total=len(ids), force=True, may_stop=False,
                  message=f"{len(finished)} of {len(ids)} desktop(s) done, {len(rebuilding)} being rebuilt")
    if rebuilding or (not stopping and len(requested) < len(ids)):
        return FollowUp(seconds=2)
    outcome = _outcome(finished, version)
    if stopping:
        return cancelled(outcome, f"stopped: {len(outcome['recomposed'])} recomposed, {len(ids) - len(requested)} "
                                  "left as they were")
    text = f"{len(outcome['recomposed'])} recomposed onto {version}, {len(outcome['failed'])} failed"
    return succeeded(outcome, text)


def _outcome(finished: list[int], version) -> dict:
    recomposed, failed_, skipped = [], [], []
    for desktop in Desktop.objects.filter(pk__in=finished).order_by("pk"):
        if desktop.state == S.FAILED:
            failed_.append({"desktop": desktop.name, "error": desktop.last_error[:500]})
        elif version is not None and desktop.image_version_id == version.pk:
            recomposed.append(desktop.name)
        else:
            skipped.append(desktop.name)  # deleted, or busy (starting, moving) when its turn came
    return {"recomposed": recomposed, "failed": failed_, "skipped": skipped, "version": str(version)}
