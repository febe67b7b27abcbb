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
