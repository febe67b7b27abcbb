"""Headers that keep the portal's pages (and files) from being framed or cached.

- Content-Security-Policy on every page Django answers: scripts, styles, images and fetches
  from the portal's own origin only (plus the console websocket: the portal's own ws(s)
  origin, and VDI_CONSOLE_GATEWAY_URL's when consoles go to a separate tier), and no framing
  (frame-ancestors 'none'). Inline styles stay allowed (noVNC and spice-html5 set them);
  inline scripts do not.
- Cache-Control: no-store on pages of a logged-in user that did not set their own: a shared
  computer's back button or cache must not show someone's desktops or the admin.
- Static files (served by WhiteNoise before any Django middleware) get X-Frame-Options and
  frame-ancestors too: WHITENOISE_ADD_HEADERS_FUNCTION = add_static_file_headers.
"""

from urllib.parse import urlsplit

from django.conf import settings


def _gateway_origin() -> str:
    url = settings.VDI_CONSOLE_GATEWAY_URL
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _identity_provider_origin() -> str:
    # The portal's logout form ends in a redirect to the provider's end_session_endpoint, which
    # Chromium checks against form-action.
    if not getattr(settings, "OIDC_ENABLED", False):
        return ""
    parts = urlsplit(settings.VDI_OIDC_ISSUER)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(request) -> str:
    own_websocket = f"{'wss' if request.is_secure() else 'ws'}://{request.get_host()}"
    connect = " ".join(filter(None, ["'self'", own_websocket, _gateway_origin()]))
    form_action = " ".join(filter(None, ["'self'", _identity_provider_origin()]))
    return ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; media-src 'self' blob:; "
            f"connect-src {connect}; object-src 'none'; base-uri 'self'; form-action {form_action}; "
            "frame-ancestors 'none'")


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", content_security_policy(request))
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response


def add_static_file_headers(headers, path, url):
    headers["X-Frame-Options"] = "DENY"
    headers["Content-Security-Policy"] = "frame-ancestors 'none'"
