"""A pool's capacity at a given moment: how many spares it keeps and whether they run, from
the schedule rule in force (broker/models/schedules.py) or else the pool's own settings, and
when that changes next. A read: the reconciler, provisioning and the admin all ask here, and
take `now` from their caller so that tests can choose the time.

Matching is on the wall clock of the site's time zone (settings.TIME_ZONE): "08:00" is 08:00
on the office clock in summer and in winter. Should rules overlap (the admin refuses it, other
writers might not), the rule whose window opened most recently wins, then the lowest id.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from .models.schedules import DAY, WEEK, WEEKDAY_NAMES, PoolScheduleRule


@dataclass(frozen=True)
class Capacity:
    spares: int
    powered_on: bool
    rule: PoolScheduleRule | None = None  # None: the pool's own min_spares and spares_powered_on

    @property
    def label(self) -> str:
        return f"{self.spares} spare{'' if self.spares == 1 else 's'}, powered {'on' if self.powered_on else 'off'}"

    @property
    def short_label(self) -> str:
        """'4 on', '2 off', '0' (no spares: no power state to tell)."""
        return f"{self.spares} {'on' if self.powered_on else 'off'}" if self.spares else "0"

    @property
    def source(self) -> str:
        return f"schedule rule “{self.rule}”" if self.rule else "the pool's own settings"

    def same_as(self, other: "Capacity") -> bool:
        return (self.spares, self.powered_on) == (other.spares, other.powered_on)


@dataclass(frozen=True)
class PoolCapacity:
    """What applies now, and the next different capacity with the moment it takes over (None
    when nothing ever changes: no rules, or rules that all say the same)."""

    current: Capacity
    next: Capacity | None
    next_at: datetime | None

    @property
    def spares(self) -> int:
        return self.current.spares

    @property
    def powered_on(self) -> bool:
        return self.current.powered_on

    @property
    def rule(self) -> PoolScheduleRule | None:
        return self.current.rule

    @property
    def next_at_label(self) -> str:
        """'Mon 10:00' in the site's time zone."""
        if self.next_at is None:
            return ""
        local = timezone.localtime(self.next_at, timezone.get_default_timezone())
        return f"{WEEKDAY_NAMES[local.weekday()]} {local:%H:%M}"

    def describe(self) -> str:
        """'4 spares, powered on — until Mon 10:00, then 2 spares, powered off'."""
        if self.next is None:
            return self.current.label
        return f"{self.current.label} — until {self.next_at_label}, then {self.next.label}"



def pool_capacity(*, pool, now: datetime | None = None) -> PoolCapacity:
    """The capacity of `pool` at `now` (aware; default: this moment) and its next change.

    Reads `pool.schedule_rules.all()`, so a caller listing many pools can prefetch them."""
    now = now or timezone.now()
    default = Capacity(spares=pool.min_spares, powered_on=pool.spares_powered_on)
    rules = [] if pool.is_farm or pool.pk is None else list(pool.schedule_rules.all())
    local = timezone.localtime(now, timezone.get_default_timezone()).replace(tzinfo=None, microsecond=0)
    at = local.weekday() * DAY + local.hour * 3600 + local.minute * 60 + local.second
    current = _capacity_at(rules, at, default)
    # The capacity can change only where some window opens or closes: try those, soonest first.
    edges = {(edge - at) % WEEK or WEEK for rule in rules for window in rule.windows()
             for edge in (window.start, window.start + window.length)}
    for ahead in sorted(edges):
        then = _capacity_at(rules, at + ahead, default)
        if not then.same_as(current):
            next_at = timezone.make_aware(local + timedelta(seconds=ahead), timezone.get_default_timezone())
            return PoolCapacity(current=current, next=then, next_at=next_at)
    return PoolCapacity(current=current, next=None, next_at=None)


def _capacity_at(rules, at: int, default: Capacity) -> Capacity:
    best_key, best = None, None
    for rule in rules:
        for window in rule.windows():
            ago = window.started_ago(at % WEEK)
            if ago is not None and (best_key is None or (ago, rule.pk) < best_key):
                best_key, best = (ago, rule.pk), rule
    if best is None:
        return default
    return Capacity(spares=best.min_spares, powered_on=best.spares_powered_on, rule=best)
