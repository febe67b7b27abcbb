"""Reads for the admin and the commands: the last sync, active lockouts, directory groups."""

from django.db.models import Count, Q
from django.utils import timezone

from .models import DirectoryGroup, DirectorySyncRun, LoginLockout


def last_sync_run() -> DirectorySyncRun | None:
    return DirectorySyncRun.objects.exclude(status=DirectorySyncRun.Status.QUEUED).first()


def active_lockouts():
    return LoginLockout.objects.filter(cleared_at__isnull=True, locked_until__gt=timezone.now())


def directory_groups_with_counts():
    return DirectoryGroup.objects.select_related("group").annotate(
        members=Count("group__user", filter=Q(group__user__directory_account__isnull=False), distinct=True),
        pools=Count("group__entitlements", distinct=True),
    )
