"""The page a request gets when the database is away (restarting, failing over, unreachable):
503 with a short explanation and Retry-After, instead of Django's bare "Server Error (500)".
Django calls the 500 handler for any exception a view or a middleware let through; this one
looks at which exception that was. No template loader, context processor or session is used
here: each of them might need the database."""

import sys

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse, HttpResponseServerError

UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Temporarily unavailable</title>
<meta http-equiv="refresh" content="15"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>The desktop portal is temporarily unavailable</h1>
<p>Its database does not answer right now, usually for a few seconds during maintenance.
This page reloads by itself; your open desktops keep running.</p>
</body></html>
"""


def _database_unavailable(exc) -> bool:
    while exc is not None:
        if isinstance(exc, (OperationalError, InterfaceError)):
            return True
        if isinstance(exc, DatabaseError) and "connection" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def server_error(request, *args, **kwargs):
    if _database_unavailable(sys.exc_info()[1]):
        response = HttpResponse(UNAVAILABLE_PAGE, status=503)
        response["Retry-After"] = "15"
        response["Cache-Control"] = "no-store"
        return response
    return HttpResponseServerError("<h1>Server Error (500)</h1>")
