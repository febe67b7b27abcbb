from django.core.exceptions import ValidationError
from django.db import models

from .hosts import Host
from .images import GoldenImage


class Pool(models.Model):
    """A set of desktops built from one golden image, offered to entitled users."""

    class Kind(models.TextChoices):
        DEDICATED = "dedicated", "Dedicated (one persistent desktop per user)"

    class Protocol(models.TextChoices):
        VNC = "vnc", "VNC (noVNC)"
        SPICE = "spice", "SPICE (spice-html5)"

    name = models.SlugField(max_length=40, unique=True, help_text="Also the middle of the desktops' domain names.")
    display_name = models.CharField(max_length=128)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DEDICATED)
    image = models.ForeignKey(GoldenImage, on_delete=models.PROTECT, related_name="pools")
    host = models.ForeignKey(
        Host,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="pools",
        help_text="Pin the pool to one host; empty places each desktop on the least busy enabled host.",
    )
    vcpus = models.PositiveSmallIntegerField(default=1)
    memory_mib = models.PositiveIntegerField(default=256)
    protocol = models.CharField(max_length=8, choices=Protocol.choices, default=Protocol.VNC)
    linked_clones = models.BooleanField(default=True, help_text="qcow2 overlay on the golden image (fast, small).")
    revoked_desktop_grace_hours = models.FloatField(
        null=True,
        blank=True,
        help_text="How long a user's desktop is kept after they lose access (empty: the site default, "
        "VDI_REVOKED_DESKTOP_GRACE_HOURS).",
    )
    is_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name"]

    def __str__(self):
        return self.display_name or self.name

    @property
    def revoked_desktop_grace(self):
        from datetime import timedelta

        from django.conf import settings

        hours = self.revoked_desktop_grace_hours
        return timedelta(hours=settings.VDI_REVOKED_DESKTOP_GRACE_HOURS if hours is None else hours)

    def clean(self):
        if self.vcpus < 1:
            raise ValidationError({"vcpus": "A desktop needs at least one vCPU."})
        if self.memory_mib < 64:
            raise ValidationError({"memory_mib": "A desktop needs at least 64 MiB of memory."})
