"""The request id outside django-structlog's own middleware:

- every HTTP response says it (X-Request-ID), so a user's report or a proxy's access log
  leads to the portal's and the workers' lines;
- the client address bound for each request is REMOTE_ADDR (the browser's when a trusted proxy
  said so: config/forwarded.py), never a header anyone may send;
- the console gateway, which is no Django view, binds its own for each websocket
  (bind_websocket_request_id) together with the desktop it is for; once the ticket is
  redeemed, the console's lines carry the ticket request's id (stored on the ticket, from
  current_request_id) and keep the websocket's own as websocket_request_id.
"""

import uuid

import structlog
from django.dispatch import receiver
from django_structlog import signals

HEADER = "X-Request-ID"


@receiver(signals.bind_extra_request_metadata)
def bind_client_address(request, logger, log_kwargs, **kwargs):
    structlog.contextvars.bind_contextvars(ip=request.META.get("REMOTE_ADDR"))


def _say_request_id(response):
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id and response is not None:
        response[HEADER] = request_id


@receiver(signals.bind_extra_request_finished_metadata)
def add_request_id_header(request, logger, response, log_kwargs, **kwargs):
    _say_request_id(response)


@receiver(signals.update_failure_response)
def add_request_id_header_to_failures(request, response, logger, exception, **kwargs):
    _say_request_id(response)


def current_request_id() -> str:
    """The request id of the request (or task) this code runs for; empty outside one."""
    return str(structlog.contextvars.get_contextvars().get("request_id") or "")[:128]


def bind_websocket_request_id(scope, **context) -> str:
    """Bind a websocket's log context (in the connection's own task: it ends with it): a
    trusted proxy's X-Request-ID (config/forwarded.py let it through) or a new id."""
    incoming = dict(scope.get("headers") or []).get(b"x-request-id")
    request_id = incoming.decode("ascii") if incoming else str(uuid.uuid4())
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, **context)
    return request_id
