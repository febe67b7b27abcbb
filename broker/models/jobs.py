"""A long action run in the background (a Celery task), one row per run: what it works on, who
started it, how far it has got, and what came of it. The admin watches the row's progress bar,
may ask it to stop where stopping is safe, and reads its result later (broker/services/jobs.py).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Job(models.Model):
    class Kind(models.TextChoices):
        IMAGE_CHECKSUM = "image_checksum", "Checksum of a published image version"
        POOL_RECOMPOSE = "pool_recompose", "Recompose a pool"
        HOST_DRAIN = "host_drain", "Drain a host"
        DIRECTORY_SYNC = "directory_sync", "Directory sync"
        GROUP_PREPROVISION = "group_preprovision", "Pre-provision a group's desktops"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)

    kind = models.CharField(max_length=24, choices=Kind.choices)
    # What it works on, as a key ("pool:3", "group:5/pool:3") that keeps two runs on the same
    # thing apart, and in words for the admin.
    target_key = models.CharField(max_length=100)
    target_label = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED, db_index=True)
    done = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(null=True, blank=True, help_text="Empty: not known yet.")
    message = models.CharField(max_length=500, blank=True, help_text="What it is doing now, or what it did.")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Two recomposes of one pool (two admins' clicks) would fight over the same desktops.
            models.UniqueConstraint(fields=["kind", "target_key"], condition=Q(state__in=["queued", "running"]),
                                    name="one_active_job_per_target"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.target_label} (#{self.pk})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def percent(self) -> int | None:
        if not self.total:
            return 100 if self.state == self.State.SUCCEEDED else None
        return min(100, int(100 * self.done / self.total))
