"""Launches, read back from the rows they leave: how many users asked for a desktop in a
period, and how long each waited for it to be ready.

A launch starts when a desktop is handed to a user (`assigned_at`: a spare claimed, or a new
desktop made for them) or when its user powers their stopped desktop on (the `stopped →
starting` event with the user as actor). It is ready at the desktop's first `running` event
from then on; a desktop already running when handed over (a ready spare) was ready at once.
A launch not ready yet when the figures are taken counts as a launch but has no time yet.
(Known limit: a ready spare handed over and then restarted within the same hour gets the
restart's time in that hour's roll-up; no row says what state it was in when handed over.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import OuterRef, Subquery

from broker.models import Desktop, DesktopEvent, DesktopState

S = DesktopState


@dataclass
class LaunchTiming:
    count: int = 0
    durations: list[float] = field(default_factory=list)

    def quantile(self, q: float) -> float | None:
        if not self.durations:
            return None
        ordered = sorted(self.durations)
        return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 3)


def _first_running(desktop_ref: str, start_ref: str) -> Subquery:
    return Subquery(DesktopEvent.objects.filter(desktop=OuterRef(desktop_ref), to_state=S.RUNNING,
                                                created_at__gte=OuterRef(start_ref))
                    .order_by("created_at").values("created_at")[:1])


def launches_between(since, until) -> LaunchTiming:
    """Launches that started in (since, until]."""
    handed = (Desktop.objects.filter(assigned_at__gt=since, assigned_at__lte=until).order_by()
              .annotate(ready=_first_running("pk", "assigned_at"))
              .values_list("assigned_at", "ready", "state", "state_changed_at"))
    powered_on = (DesktopEvent.objects.filter(created_at__gt=since, created_at__lte=until, from_state=S.STOPPED,
                                              to_state=S.STARTING, actor__isnull=False).order_by()
                  .annotate(ready=_first_running("desktop_id", "created_at"))
                  .values_list("created_at", "ready", "desktop__state", "desktop__state_changed_at"))
    timing = LaunchTiming()
    for started, ready, state, changed_at in [*handed, *powered_on]:
        timing.count += 1
        if ready is not None:
            timing.durations.append(max(0.0, (ready - started).total_seconds()))
        elif state == S.RUNNING and changed_at <= started:
            timing.durations.append(0.0)  # running already when handed over: a ready spare
    return timing
