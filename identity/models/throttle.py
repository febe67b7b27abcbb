"""Failed logins and the short lockouts they cause, in the database so every portal process agrees."""

from django.conf import settings
from django.db import models


class LoginFailure(models.Model):
    username = models.CharField(max_length=150, help_text="As typed, lower-cased.")
    client_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["username", "created_at"]),
            models.Index(fields=["client_address", "created_at"]),
        ]

    def __str__(self):
        return f"{self.username} from {self.client_address} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class LoginLockout(models.Model):
    class Scope(models.TextChoices):
        ACCOUNT = "account", "Account"
        ADDRESS = "address", "Client address"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    key = models.CharField(max_length=150, help_text="The user name (lower-cased) or the client address.")
    failures = models.PositiveIntegerField()
    locked_at = models.DateTimeField(auto_now_add=True)
    locked_until = models.DateTimeField(db_index=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    cleared_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")

    class Meta:
        ordering = ["-locked_at", "-id"]
        indexes = [models.Index(fields=["scope", "key", "locked_until"])]

    def __str__(self):
        return f"{self.get_scope_display()} {self.key} until {self.locked_until:%Y-%m-%d %H:%M} UTC"


class KnownLoginAddress(models.Model):
    """An address an account logged in from: its owner is not locked out there by others' failures."""

    username = models.CharField(max_length=150)
    client_address = models.GenericIPAddressField()
    last_success_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["username", "client_address"], name="one_known_address_row"),
        ]

    def __str__(self):
        return f"{self.username} at {self.client_address}"
