"""Delegated administration: which pools an operator looks after.

An operator is a user (or every member of a group) with one or more of these rows and no model
permissions of their own: through the API they see and act on the desktops, console sessions,
entitlements and events of those pools only (api/scoping.py). Auditors are the members of the
group AUDITORS_GROUP: they read everything and change nothing.
"""

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

AUDITORS_GROUP = "Auditors"


class OperatorScope(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="operator_scopes")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, null=True, blank=True, related_name="operator_scopes")
    pools = models.ManyToManyField("broker.Pool", related_name="operator_scopes",
                                   help_text="The pools whose desktops, sessions and entitlements they manage.")
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "operator scope"
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False)),
                name="operator_scope_user_xor_group",
            ),
        ]

    def __str__(self):
        return f"operator {self.user or self.group}"

    def clean(self):
        if bool(self.user_id) == bool(self.group_id):
            raise ValidationError("Choose either one user or one group.")
