"""Retries for tasks that carry a one-off intent (clone this desktop, start it, log this session
off, sync the directory now): when the database is away (restarting, failing over) the task is
tried again with a growing delay, up to about 25 minutes, instead of being lost with a trace in
the worker's log. Services re-read the rows and check the state, so a retry does no harm.

Not for tasks a request waits on (console passwords: a late retry could overwrite a newer
password) nor for periodic passes (beat sends the next one anyway)."""

from django.db import InterfaceError, OperationalError

RETRY_WHILE_THE_DATABASE_IS_AWAY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": False,
    "retry_kwargs": {"max_retries": 30},
}
