"""A pool's capacity schedule: windows of the week in which the pool keeps another number of
spares, powered on or off, than its own settings say (e.g. 20 running spares on weekday
mornings, 2 at night, none running at weekends).

Times are wall-clock times of the site's time zone (settings.TIME_ZONE). A window belongs to
the weekday it starts on; when its end is not after its start it runs past midnight into the
next day (Fri 20:00–06:00 ends on Saturday at 06:00), and 00:00–00:00 is the whole day. The
start is inside the window, the end is not.

Rules of one pool may not overlap (the admin refuses it), so at any moment at most one rule
applies and the next change is plain to see. Rows written around the admin could still
overlap: then the rule that started most recently wins, and among those the lowest id
(`broker/capacity.py`).
"""

from dataclasses import dataclass

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

from .pools import Pool

WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # datetime.weekday() order
ALL_WEEKDAYS = (1 << 7) - 1
DAY = 24 * 3600
WEEK = 7 * DAY


def weekdays_label(mask: int) -> str:
    """'Mon–Fri', 'Sat, Sun', 'every day', 'Mon, Wed–Fri'."""
    if mask & ALL_WEEKDAYS == ALL_WEEKDAYS:
        return "every day"
    days = [d for d in range(7) if mask & (1 << d)]
    runs, start = [], None
    for i, d in enumerate(days):
        if start is None:
            start = d
        if i + 1 == len(days) or days[i + 1] != d + 1:
            if d - start >= 2:
                runs.append(f"{WEEKDAY_NAMES[start]}–{WEEKDAY_NAMES[d]}")
            else:
                runs.extend(WEEKDAY_NAMES[x] for x in range(start, d + 1))
            start = None
    return ", ".join(runs)


class WeekdaysFormField(forms.MultipleChoiceField):
    """Seven checkboxes in the form, one small integer (bit 0 = Monday) in the database."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs):
        for unwanted in ("max_length", "min_value", "max_value", "step_size", "coerce", "empty_value"):
            kwargs.pop(unwanted, None)
        kwargs["choices"] = [(str(1 << d), name) for d, name in enumerate(WEEKDAY_NAMES)]
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("class", "vdi-weekdays")

    def prepare_value(self, value):
        if isinstance(value, int):
            return [str(1 << d) for d in range(7) if value & (1 << d)]
        return value

    def clean(self, value):
        selected = super().clean(value)
        return sum(int(bit) for bit in set(selected or ()))

    def has_changed(self, initial, data):
        return super().has_changed(self.prepare_value(initial or 0), data)


class WeekdaysField(models.PositiveSmallIntegerField):
    """A set of weekdays as a bitmask: bit 0 is Monday, bit 6 Sunday."""

    def formfield(self, **kwargs):
        # Not required in the form: the model's clean() says what is missing, in its words.
        return WeekdaysFormField(required=False, label=self.verbose_name.capitalize(), help_text=self.help_text)


@dataclass(frozen=True)
class Window:
    """One occurrence pattern of a rule in the week, in seconds from Monday 00:00."""

    start: int  # 0 <= start < WEEK
    length: int  # 0 < length <= DAY

    def started_ago(self, at: int) -> int | None:
        """Seconds since this window opened if it is open at week-second `at`, else None."""
        ago = (at - self.start) % WEEK
        return ago if ago < self.length else None

    def segments(self) -> list[tuple[int, int]]:
        """The window as [begin, end) ranges within one week (two when it runs past Sunday)."""
        end = self.start + self.length
        return [(self.start, end)] if end <= WEEK else [(self.start, WEEK), (0, end - WEEK)]


def week_second_label(at: int) -> str:
    at %= WEEK
    return f"{WEEKDAY_NAMES[at // DAY]} {at % DAY // 3600:02d}:{at % 3600 // 60:02d}"


class PoolScheduleRule(models.Model):
    """In a window of the week the pool keeps `min_spares` spares, powered on or off, instead
    of the pool's own `min_spares` and `spares_powered_on`."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="schedule_rules")
    name = models.CharField(max_length=60, blank=True, help_text="Optional, e.g. “Morning rush”.")
    weekdays = WeekdaysField(default=0, help_text="The days the window starts on.")
    start_time = models.TimeField(help_text="Site time (TIME_ZONE).")
    end_time = models.TimeField(
        help_text="Not after the start: runs past midnight (20:00–06:00). 00:00–00:00: the whole day.")
    min_spares = models.PositiveIntegerField(help_text="Spares kept ready in this window.")
    spares_powered_on = models.BooleanField(
        default=True, help_text="Spares running (instant launch) or powered off (saves host memory).")

    class Meta:
        ordering = ["pool", "start_time", "pk"]
        verbose_name = "capacity schedule rule"

    def __str__(self):
        return self.name or self.when_label

    @property
    def when_label(self) -> str:
        return f"{weekdays_label(self.weekdays)} {self.start_time:%H:%M}–{self.end_time:%H:%M}"

    @property
    def capacity_label(self) -> str:
        return f"{self.min_spares} spares, powered {'on' if self.spares_powered_on else 'off'}"

    @property
    def is_whole_day(self) -> bool:
        return self.start_time == self.end_time and self.start_time.hour == self.start_time.minute == 0

    def windows(self) -> list[Window]:
        if not (self.weekdays and self.start_time is not None and self.end_time is not None):
            return []
        start = self.start_time.hour * 3600 + self.start_time.minute * 60 + self.start_time.second
        end = self.end_time.hour * 3600 + self.end_time.minute * 60 + self.end_time.second
        length = (end - start) % DAY or DAY
        return [Window(start=d * DAY + start, length=length) for d in range(7) if self.weekdays & (1 << d)]

    def clean(self):
        errors = {}
        if not self.weekdays & ALL_WEEKDAYS:
            errors["weekdays"] = "Pick at least one weekday."
        if self.start_time is not None and self.start_time == self.end_time and not self.is_whole_day:
            errors["end_time"] = (f"The window starts and ends at {self.start_time:%H:%M}: it would be empty. "
                                  "For the whole day write 00:00–00:00.")
        try:
            pool = self.pool  # in the admin: the pool as the same form submits it
        except Pool.DoesNotExist:
            pool = None
        if pool is not None:
            if pool.is_farm:
                raise ValidationError("A farm starts sessions on demand and keeps no spares, so it has no "
                                      "capacity schedule.")
            if self.min_spares is not None and self.min_spares > pool.max_desktops:
                errors["min_spares"] = (f"{self.min_spares} spares is more than the pool's maximum size "
                                        f"({pool.max_desktops} desktops).")
        if errors:
            raise ValidationError(errors)


def first_overlap(rules) -> tuple[object, object, int] | None:
    """Two rules whose windows overlap and the week-second their overlap begins, or None."""
    rules = list(rules)
    for i, a in enumerate(rules):
        for b in rules[i + 1:]:
            starts = [max(a0, b0) for wa in a.windows() for wb in b.windows()
                      for a0, a1 in wa.segments() for b0, b1 in wb.segments() if max(a0, b0) < min(a1, b1)]
            if starts:
                return a, b, min(starts)
    return None
