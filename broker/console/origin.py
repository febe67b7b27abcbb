"""Which Origins may open a console websocket: the portal's own, plus configured ones."""

from django.conf import settings


def origin_of_request(*, scheme: str, host: str) -> str:
    return f"{scheme}://{host}".lower()


def websocket_origin(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"origin":
            return value.decode("latin-1").lower()
    return None


def websocket_own_origin(scope) -> str | None:
    """The portal origin as the browser addressed it (Host header, ws→http, wss→https)."""
    host = None
    for name, value in scope.get("headers", []):
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        return None
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return origin_of_request(scheme=scheme, host=host)


def is_allowed_origin(scope) -> bool:
    origin = websocket_origin(scope)
    if not origin:
        return False
    own = websocket_own_origin(scope)
    host = own.split("://", 1)[1].rsplit(":", 1)[0].strip("[]") if own else ""
    if own and origin == own and _host_allowed(host):
        return True
    return origin in {o.lower() for o in settings.VDI_CONSOLE_ALLOWED_ORIGINS + settings.CSRF_TRUSTED_ORIGINS}


def _host_allowed(host: str) -> bool:
    from django.http.request import validate_host

    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return validate_host(host, allowed) or validate_host(f"[{host}]", allowed)
