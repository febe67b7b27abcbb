"""Backups of dedicated desktops' user-data disks: one row per copy, on the backup storage pool
(VDI_BACKUP_POOL at VDI_BACKUP_PATH) of the host that took it."""

from django.conf import settings
from django.db import models


class DataDiskBackup(models.Model):
    class State(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Kind(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        MANUAL = "manual", "Manual"

    desktop = models.ForeignKey("broker.Desktop", on_delete=models.CASCADE, related_name="backups")
    host = models.ForeignKey("broker.Host", on_delete=models.PROTECT, related_name="backups",
                             help_text="The host whose libvirt wrote it (and whose backup pool holds it).")
    storage_pool = models.CharField(max_length=64, editable=False)
    volume_name = models.CharField(max_length=160, editable=False)
    path = models.CharField(max_length=400, blank=True, editable=False)
    size_bytes = models.BigIntegerField(null=True, blank=True, editable=False,
                                        help_text="What the copy takes on the backup storage.")
    capacity_bytes = models.BigIntegerField(null=True, blank=True, editable=False,
                                            help_text="The disk's size as the guest sees it.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SCHEDULED, editable=False)
    # Whether the desktop was running (a live backup job) or off (a volume copy) when it was taken.
    taken_live = models.BooleanField(default=False, editable=False)
    error = models.TextField(blank=True, editable=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+", editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["desktop", "state", "created_at"], name="backup_desktop_state_idx")]

    def __str__(self):
        return f"{self.desktop} data disk at {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()
