"""What the broker knows of the LDAP directory: which users and groups are the directory's.

Only users with a DirectoryAccount are created, updated or deactivated by the directory, and
only their memberships in directory groups are changed: local accounts (admins, break-glass)
and local groups are never touched by a login or a sync.
"""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class DirectoryGroup(models.Model):
    """A directory group, mirrored as the Django group of the same name (entitlements point there)."""

    dn = models.CharField(max_length=1024, unique=True, help_text="Distinguished name, normalised to lower case.")
    name = models.CharField(max_length=150)
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="directory_groups")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    # Set when a sync no longer finds the group; its members were removed then. The Django group
    # and its entitlements stay, so a group that comes back needs no new configuration.
    missing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class DirectoryAccount(models.Model):
    """Marks a Django user as a directory user, and says why the directory deactivated it."""

    class InactiveReason(models.TextChoices):
        NONE = "", "—"
        LEFT_DIRECTORY = "left_directory", "Gone from the directory"
        NO_ENTITLEMENT = "no_entitlement", "In no entitled group"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="directory_account")
    dn = models.CharField(max_length=1024)
    # Set only when the directory (a sync or a login) deactivated the user; the directory
    # reactivates only those, never a user an admin deactivated by hand.
    inactive_reason = models.CharField(max_length=20, blank=True, choices=InactiveReason.choices)
    missing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user__username"]

    def __str__(self):
        return self.dn
