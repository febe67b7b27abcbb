"""How many console tickets a user may ask for: each one sets a fresh password on a desktop
through libvirt, so a script asking in a loop would keep the hosts busy. Counted from the
ticket rows themselves (every portal process sees them; the beat purges old ones)."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from ..models import ConsoleTicket


def may_issue_console_ticket(*, user) -> bool:
    limit = settings.VDI_CONSOLE_TICKETS_PER_MINUTE
    if limit <= 0:
        return True
    since = timezone.now() - timedelta(minutes=1)
    return ConsoleTicket.objects.filter(user=user, created_at__gt=since).count() < limit
