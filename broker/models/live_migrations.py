"""A move of a running desktop from one hypervisor to another by live migration: asked for by
a drain or an admin, carried out by the source host's worker, with its progress as it goes.

The row outlives the move: it is the admin's record of what moved where, how long it took,
and why a move failed (the desktop then stays, running, where it was).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class LiveMigration(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Waiting"
        RUNNING = "running", "Copying memory"
        COMPLETED = "completed", "Moved"
        FAILED = "failed", "Failed (stayed where it was)"
        CANCELLED = "cancelled", "Cancelled"

    class Reason(models.TextChoices):
        DRAIN = "drain", "Host drain"
        ADMIN = "admin", "Asked by an admin"

    desktop = models.ForeignKey("broker.Desktop", on_delete=models.CASCADE, related_name="migrations")
    source = models.ForeignKey("broker.Host", on_delete=models.CASCADE, related_name="migrations_out")
    destination = models.ForeignKey("broker.Host", on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="migrations_in",
                                    help_text="Chosen when the move starts, unless the admin chose it.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    data_total_bytes = models.BigIntegerField(null=True, blank=True)
    data_processed_bytes = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["desktop"], condition=Q(state__in=["queued", "running"]),
                                    name="one_unfinished_migration_per_desktop"),
        ]

    def __str__(self):
        return f"{self.desktop} {self.source} → {self.destination or '?'}"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.COMPLETED, self.State.FAILED, self.State.CANCELLED)

    @property
    def percent_done(self) -> int | None:
        if self.state == self.State.COMPLETED:
            return 100
        if not self.data_total_bytes or self.data_processed_bytes is None:
            return None
        return min(99, int(100 * self.data_processed_bytes / self.data_total_bytes))

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
