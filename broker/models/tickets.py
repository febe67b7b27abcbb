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
    # The console port read from the domain's live definition when the ticket was issued,
    # where its one-time password was set. The gateway resolves the port again when the
    # console connects and refuses if it moved. Null: a ticket issued without a grant.
    port = models.PositiveIntegerField(null=True, blank=True)
    # The desktop's one-time console password, encrypted with a key derived from the token
    # (which is not stored): the database alone cannot reveal it, the browser never gets it.
    sealed_password = models.CharField(max_length=128, blank=True)
    # SPICE: the channel types (main first, then display, inputs, cursor...) admitted so far.
    spice_channels = models.CharField(max_length=64, blank=True)
    # The request id of the page's ticket request (config/logs.py): the console's log lines
    # carry it, so a launch's trail goes on from the ticket into the gateway. Not a secret.
    request_id = models.CharField(max_length=128, blank=True)

    def __str__(self):
        return f"ticket #{self.pk} for {self.desktop_id} ({self.protocol})"
