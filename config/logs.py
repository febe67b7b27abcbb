"""Log lines of every process (portal, gateway, Celery workers, host agents): one JSON object
a line (VDI_LOG_FORMAT=json, the default) or key=value text for a person at a terminal
(VDI_LOG_FORMAT=text, what `make run` writes to var/log/).

Every line a request causes carries its `request_id` (django-structlog binds it; an incoming
X-Request-ID is believed only from a trusted proxy: config/forwarded.py), and so does every line
of the Celery tasks it starts, on the central workers and on the host agents: django-structlog
copies the bound context into the task's headers when it is sent and binds it again in the
worker (config/celery.py). The console gateway binds its own (config/request_ids.py).

Standard-library loggers (Django, Celery, uvicorn, ours) go through the same formatter, so
their lines are JSON too, with the request's context merged in. The last step before a line is
written scrubs console tickets and passwords (config/log_filters.py).
"""

import structlog

from .log_filters import scrub_secrets

FORMATS = ("json", "text")

# Applied to every line, from structlog loggers and standard-library loggers alike.
_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _drop_terminal_colours(logger, method_name, event_dict):
    """uvicorn passes its message again with ANSI colours, as `color_message`: not for files."""
    event_dict.pop("color_message", None)
    return event_dict


def log_format(value: str) -> str:
    value = (value or "json").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"VDI_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def _renderer(fmt: str):
    if fmt == "json":
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)


def logging_config(*, fmt: str, level: str) -> dict:
    """Django's LOGGING for this format: one handler, on stderr, that renders every record."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    scrub_secrets,
                    _renderer(fmt),
                ],
                "foreign_pre_chain": [*_SHARED, structlog.stdlib.ExtraAdder(), _drop_terminal_colours],
            },
        },
        "filters": {"scrub_tickets": {"()": "config.log_filters.ScrubConsoleTickets"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured",
                                 "filters": ["scrub_tickets"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # uvicorn's own (it gave them text handlers before Django started): ours instead.
            # It logs every websocket handshake with its URL, where the console ticket is.
            "uvicorn": {"handlers": ["console"], "propagate": False},
            "uvicorn.error": {"filters": ["scrub_tickets"]},
            "uvicorn.access": {"level": "WARNING", "handlers": ["console"], "propagate": False,
                               "filters": ["scrub_tickets"]},
        },
    }


def configure_structlog() -> None:
    """structlog's own loggers (django-structlog's request_started, task_started, ...) hand
    their event to the standard-library handler above."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def configure_process_logging() -> None:
    """For a process that sets up logging itself (the Celery worker: config/celery.py)."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    configure_structlog()
    logging.captureWarnings(True)

