"""Golden image versions: recorded only after the host confirms the file is there and readable."""

from django.db import transaction
from django.db.models import Max

from ..hypervisor import driver_for_host
from ..models import GoldenImage, GoldenImageVersion, Host
from .provisioning import prepare_host_storage


def publish_image_version(*, image: GoldenImage, path: str, host: Host, notes: str = "") -> GoldenImageVersion:
    """Check `path` on `host` through libvirt and record it as the image's newest version.

    Raises ImageUnavailable (with a message for the admin) when the file is missing, empty or
    outside the host's storage pools; nothing is recorded then.
    """
    prepare_host_storage(host)
    info = driver_for_host(host).image_info(path=path)
    with transaction.atomic():
        GoldenImage.objects.select_for_update().filter(pk=image.pk).first()
        last = image.versions.aggregate(n=Max("number"))["n"] or 0
        return GoldenImageVersion.objects.create(
            image=image, number=last + 1, path=info.path, size_bytes=info.capacity_bytes, notes=notes
        )
