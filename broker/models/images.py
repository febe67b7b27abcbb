from django.db import models


class GoldenImage(models.Model):
    """A template desktops are cloned from; its content changes through versions."""

    name = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=128)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.display_name or self.name

    def current_version(self):
        return self.versions.filter(is_published=True).order_by("-number").first()


class GoldenImageVersion(models.Model):
    image = models.ForeignKey(GoldenImage, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    path = models.CharField(
        max_length=512,
        help_text="Path of the qcow2 file on the hosts, inside a libvirt storage pool "
        "(e.g. /var/lib/vdi/images/demo-linux-v1.qcow2).",
    )
    size_bytes = models.BigIntegerField(null=True, blank=True, help_text="Virtual size, read from the host.")
    sha256 = models.CharField(max_length=64, blank=True)
    notes = models.TextField(blank=True)
    is_published = models.BooleanField(default=True, help_text="New desktops use the newest published version.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["image", "-number"]
        constraints = [models.UniqueConstraint(fields=["image", "number"], name="unique_image_version")]

    def __str__(self):
        return f"{self.image.name} v{self.number}"
