"""Golden image versions: recorded only after a host confirms the file is there and readable."""

import hashlib
import logging
from pathlib import Path

from django.db import transaction
from django.db.models import Max

from ..hypervisor import ImageUnavailable, VolumeInfo, driver_for_host
from ..models.hosts import directory_problem
from ..models import BrokerEvent, GoldenImage, GoldenImageVersion, Host, Pool
from .provisioning import prepare_host_storage
from ..enqueue import enqueue_after_commit

log = logging.getLogger(__name__)


def check_image_file(*, path: str, host: Host) -> VolumeInfo:
    """Raises ImageUnavailable (a message for the admin) if `path` is missing, empty or outside
    the host's storage pools."""
    if directory_problem(path, required=True) or path.endswith("/"):
        # Checked before libvirt sees it: an absolute file path, no '..', nothing unprintable.
        raise ImageUnavailable(f"{path!r} is not an absolute path of an image file (no '..', '//' or "
                               "control characters)")
    prepare_host_storage(host)
    return driver_for_host(host).image_info(path=path)


def publish_image_version(*, image: GoldenImage, path: str, host: Host, notes: str = "",
                          checked: VolumeInfo | None = None, actor=None) -> GoldenImageVersion:
    """Check `path` on `host` and record it as the image's newest version. Floating pools of
    this image replace their spares at once; used floating desktops move over at their next
    reset; dedicated pools move over when the admin recomposes them."""
    info = checked or check_image_file(path=path, host=host)
    with transaction.atomic():
        GoldenImage.objects.select_for_update().filter(pk=image.pk).first()
        last = image.versions.aggregate(n=Max("number"))["n"] or 0
        version = GoldenImageVersion.objects.create(
            image=image, number=last + 1, path=info.path, size_bytes=info.capacity_bytes, notes=notes
        )
        BrokerEvent.objects.create(kind=BrokerEvent.Kind.IMAGE, host=host,
                                   message=f"published {version} ({info.path}, {info.capacity_bytes} bytes)")
        start_checksum(version=version, actor=actor)  # a job: the admin watches it read the file
        for pool_id in Pool.objects.filter(image=image, kind=Pool.Kind.FLOATING).values_list("pk", flat=True):
            enqueue_after_commit("broker.tasks.reconcile_pool_task", pool_id)
    return version


def record_checksum(*, version_id: int, progress=None) -> str | None:
    """SHA-256 of the image file, when the file is on this machine (a local host's image).
    `progress` (a job's JobProgress) hears of each block read and may stop it between blocks:
    nothing is recorded then."""
    version = GoldenImageVersion.objects.filter(pk=version_id).first()
    if version is None or version.sha256:
        return version.sha256 if version else None
    path = Path(version.path)
    if not path.is_file():
        log.info("%s is not on this machine; its checksum is left to the host's tooling", version.path)
        return None
    digest = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(4 * 2**20), b""):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress.step(done=done, total=total, message=f"{done / 2**20:.0f} of {total / 2**20:.0f} MiB read")
    GoldenImageVersion.objects.filter(pk=version_id).update(sha256=digest.hexdigest())
    return digest.hexdigest()


def start_checksum(*, version: GoldenImageVersion, actor=None):
    """The checksum as a job the admin can watch (and stop)."""
    from .jobs import start_job

    return start_job(kind="image_checksum", target_key=f"image-version:{version.pk}",
                     target_label=f"{version} ({version.path})", started_by=actor,
                     params={"version_id": version.pk})


def checksum_job(job, progress):
    """Job runner: the SHA-256 of a version's file, read block by block."""
    from .jobs import failed, succeeded

    version = GoldenImageVersion.objects.filter(pk=job.params["version_id"]).first()
    if version is None:
        return failed(None, "the image version was deleted")
    progress.step(done=0, message=f"reading {version.path}", force=True)
    sha256 = record_checksum(version_id=version.pk, progress=progress)
    if sha256 is None:
        return failed({"path": version.path}, f"{version.path} is not on this machine: checksum it on its host")
    return succeeded({"sha256": sha256, "path": version.path}, f"sha256 {sha256}")
