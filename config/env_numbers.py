"""Numbers read from the environment: a bad value stops the start with an error that names the
variable and says what it wants, not a ValueError from deep inside a library minutes later
(a beat schedule of "nan" seconds, a negative ticket lifetime, "30s" for 30)."""

from __future__ import annotations

import math
import os

from django.core.exceptions import ImproperlyConfigured


def _read(name: str, default, kind, *, minimum, maximum, positive):
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        wanted = "a whole number" if kind is int else "a number"
        raise ImproperlyConfigured(f"{name} must be {wanted}, not {raw!r}") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name} must be a finite number, not {raw!r}")
    if positive and value <= 0:
        raise ImproperlyConfigured(f"{name} must be greater than 0, not {raw!r}")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {raw!r}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {raw!r}")
    return value


def env_int(name: str, default: int, *, minimum: int | None = 0, maximum: int | None = None,
            positive: bool = False) -> int:
    return _read(name, default, int, minimum=minimum, maximum=maximum, positive=positive)


def env_float(name: str, default: float, *, minimum: float | None = 0.0, maximum: float | None = None,
              positive: bool = False) -> float:
    return _read(name, default, float, minimum=minimum, maximum=maximum, positive=positive)
