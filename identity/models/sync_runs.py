from django.conf import settings
from django.db import models
from django.db.models import Q


class DirectorySyncRun(models.Model):
    """One run of the directory sync: when, who asked, what it changed, what went wrong."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        # Applied additions and updates but held back removals that looked like a directory
        # fault (too many at once); an admin applies them by running with removals allowed.
        HELD = "held", "Held back removals"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (another run was busy)"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        ADMIN = "admin", "Admin"
        COMMAND = "command", "manage.py ldap_sync"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    allow_mass_removal = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    users_seen = models.PositiveIntegerField(default=0)
    groups_seen = models.PositiveIntegerField(default=0)
    users_created = models.PositiveIntegerField(default=0)
    users_updated = models.PositiveIntegerField(default=0)
    users_deactivated = models.PositiveIntegerField(default=0)
    users_reactivated = models.PositiveIntegerField(default=0)
    groups_created = models.PositiveIntegerField(default=0)
    memberships_added = models.PositiveIntegerField(default=0)
    memberships_removed = models.PositiveIntegerField(default=0)
    removals_held = models.PositiveIntegerField(default=0, help_text="Deactivations and membership removals "
                                                "not applied because there were too many at once.")
    errors = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Two syncs at once (the schedule and an admin's click) would fight over the same rows.
            models.UniqueConstraint(fields=["status"], condition=Q(status="running"),
                                    name="one_directory_sync_at_a_time"),
        ]

    def __str__(self):
        return f"directory sync #{self.pk} ({self.get_status_display()})"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None
