"""What exists, found the way Django and Channels find it, so that a new URL, API route or
websocket is covered by the security tests without anyone listing it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name"
    regex: str  # the whole path, as one regular expression
    kwargs: tuple[str, ...]
    callback: object

    def path(self, **values) -> str:
        """A concrete path: each named group replaced by values[name] (or "1")."""
        text = self.regex.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\A", "")
        text = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values.get(m.group(1), "1")), text)
        return "/" + re.sub(r"\\(.)", r"\1", text.replace("/?", "/"))


def _regex(pattern) -> str:
    return pattern.pattern.regex.pattern if hasattr(pattern.pattern, "regex") else str(pattern.pattern)


def http_routes(resolver=None, prefix: str = "", namespace: str = "") -> list[Route]:
    resolver = resolver or get_resolver()
    routes = []
    for entry in resolver.url_patterns:
        regex = _regex(entry).lstrip("^")
        if isinstance(entry, URLResolver):
            space = ":".join(filter(None, [namespace, entry.namespace]))
            routes += http_routes(entry, prefix + regex.rstrip("$"), space)
        elif isinstance(entry, URLPattern):
            whole = prefix + regex
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name or whole
            routes.append(Route(name=name, regex=whole, kwargs=tuple(re.compile(whole).groupindex),
                                callback=entry.callback))
    return routes


def websocket_routes(application) -> list[Route]:
    """The websocket URLRouter's routes of an ASGI application (config.asgi, config.gateway_asgi),
    without the catch-all that answers 404."""
    while hasattr(application, "__wrapped__"):  # config/forwarded.py's wrapper
        application = application.__wrapped__
    router = application.application_mapping["websocket"]
    routes = []
    for route in router.routes:
        regex = _regex(route)
        if regex in ("", "^", "^$") or route.pattern.regex.pattern in ("", "^"):
            continue
        if not regex.startswith("^"):
            regex = "^" + route.pattern.regex.pattern.lstrip("^")
        routes.append(Route(name=route.name or regex, regex=route.pattern.regex.pattern,
                            kwargs=tuple(route.pattern.regex.groupindex), callback=route.callback))
    return routes
