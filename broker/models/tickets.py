from django.conf import settings
from django.db import models


class ConsoleTicket(models.Model):
    """A one-time permission to open one desktop's console.

    Only the SHA-256 of the token is stored. The ticket is bound to the user, their login
    session, the desktop, the protocol and the page's Origin; it lives seconds.
    """

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    session_key_hash = models.CharField(max_length=64)
    desktop = models.ForeignKey("broker.Desktop", on_delete=models.CASCADE, related_name="console_tickets")
    protocol = models.CharField(max_length=8)
    origin = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"ticket #{self.pk} for {self.desktop_id} ({self.protocol})"
