from django.conf import settings
from django.db import models
from django.utils import timezone


class ConsoleSession(models.Model):
    """One console connection of a user to a desktop, from open to close."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_sessions")
    desktop = models.ForeignKey("broker.Desktop", on_delete=models.CASCADE, related_name="console_sessions")
    protocol = models.CharField(max_length=8)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    opened_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The gateway holding the console touches this at every periodic re-check. A row that
    # stops being touched belongs to a gateway that died (killed, crashed, host lost): it no
    # longer counts against the limits, and close_abandoned_console_sessions() closes it.
    last_seen_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The user's last keyboard or mouse input, as the gateway last reported it (at its re-checks).
    last_input_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_code = models.PositiveIntegerField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True)
    bytes_to_client = models.BigIntegerField(default=0)
    bytes_to_desktop = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-opened_at"]

    def __str__(self):
        return f"{self.user} on {self.desktop} at {self.opened_at:%Y-%m-%d %H:%M}"

    @property
    def is_open(self):
        return self.closed_at is None
