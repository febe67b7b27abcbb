from django.conf import settings
from django.db import models


class DesktopEvent(models.Model):
    """One line of a desktop's history: every state change and every notable action."""

    desktop = models.ForeignKey("broker.Desktop", on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    message = models.TextField(blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        change = f"{self.from_state} → {self.to_state}" if self.to_state else "note"
        return f"{self.desktop_id}: {change} {self.message}"


class BrokerEvent(models.Model):
    """Something the broker did or saw that concerns a host or a pool rather than one desktop
    (an orphan domain removed, a host gone offline, a pool backing off)."""

    class Kind(models.TextChoices):
        RECONCILE = "reconcile", "Reconciliation"
        HOST = "host", "Host"
        POOL = "pool", "Pool"
        IMAGE = "image", "Golden image"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    host = models.ForeignKey("broker.Host", on_delete=models.CASCADE, null=True, blank=True, related_name="events")
    pool = models.ForeignKey("broker.Pool", on_delete=models.CASCADE, null=True, blank=True, related_name="events")
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.message}"
