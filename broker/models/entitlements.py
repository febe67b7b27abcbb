from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from .pools import Pool


class Entitlement(models.Model):
    """Who may launch a pool: one user, or every member of one group."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="entitlements")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="entitlements"
    )
    group = models.ForeignKey(Group, on_delete=models.CASCADE, null=True, blank=True, related_name="entitlements")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False)),
                name="entitlement_user_xor_group",
            ),
            models.UniqueConstraint(fields=["pool", "user"], name="unique_user_entitlement"),
            models.UniqueConstraint(fields=["pool", "group"], name="unique_group_entitlement"),
        ]

    def __str__(self):
        who = f"user {self.user}" if self.user_id else f"group {self.group}"
        return f"{who} → {self.pool}"

    def clean(self):
        if bool(self.user_id) == bool(self.group_id):
            raise ValidationError("Entitle either one user or one group.")
