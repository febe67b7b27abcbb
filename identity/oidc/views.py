"""The single sign-on pages: start the sign-in, the provider's callback, and the back-channel
logout endpoint. The flow itself (state, nonce, PKCE, the code exchange) is mozilla-django-oidc's;
these subclasses add discovery, a clear page for every refusal (never a 500), and the audit log."""

import logging
import time
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.contrib.auth.views import LogoutView
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from ..models import AuditEvent
from ..services import audit
from . import discovery, logout
from .backend import SsoRefusal

log = logging.getLogger(__name__)
# A sign-in not finished at the provider within this time is refused when it comes back.
STATE_MAX_AGE_SECONDS = 600


def provider_name() -> str:
    return settings.VDI_OIDC_PROVIDER_NAME


def refused_page(request, reason: str, *, status: int = 400):
    audit.record_event(kind=AuditEvent.Kind.SSO_LOGIN_FAILED, request=request,
                       username=getattr(request, "sso_username", ""), message=f"via {provider_name()}: {reason}")
    return render(request, "portal/sso_failed.html", {"provider_name": provider_name(), "reason": reason},
                  status=status)


@method_decorator(never_cache, name="dispatch")
class SignInView(OIDCAuthenticationRequestView):
    """Redirects to the provider's authorization endpoint (state, nonce and PKCE challenge kept in
    the session by mozilla-django-oidc)."""

    def __init__(self, *args, **kwargs):
        View.__init__(self, *args, **kwargs)  # the endpoint is discovered per request, below
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID

    def get(self, request):
        try:
            self.OIDC_OP_AUTH_ENDPOINT = discovery.provider_metadata().authorization_endpoint
        except discovery.ProviderUnavailable:
            return refused_page(request, f"{provider_name()} is not reachable right now. Local accounts can "
                                         "still log in with their password.", status=503)
        return super().get(request)


@method_decorator(never_cache, name="dispatch")
class CallbackView(OIDCAuthenticationCallbackView):
    def get(self, request):
        if "state" not in request.GET and "error" not in request.GET:
            return refused_page(request, "This sign-in answer is incomplete (no state).")
        if self._state_expired(request):
            return refused_page(request, "Sign-in refused: this sign-in was started too long ago (state expired). "
                                         "Sign in again.")
        try:
            return super().get(request)
        except SuspiciousOperation as exc:
            # A state not issued to this browser, used already, or an ID token refused.
            reason = str(exc) if isinstance(exc, SsoRefusal) else "this sign-in was not started here or was used " \
                "already (state)"
            log.warning("single sign-on refused: %s", reason)
            return refused_page(request, f"Sign-in refused: {reason}.")
        except discovery.ProviderUnavailable:
            return refused_page(request, f"{provider_name()} is not reachable right now.", status=503)
        except requests.HTTPError as exc:
            response = exc.response
            code = ""
            try:
                code = response.json().get("error", "") if response is not None else ""
            except ValueError:
                pass
            log.warning("single sign-on: the provider refused a request: %s %s", getattr(response, "status_code", ""),
                        code)
            what = "this sign-in's code" if str(exc).startswith("Get Token Error") else "this sign-in"
            return refused_page(request, f"Sign-in refused: {provider_name()} did not accept {what}"
                                         f"{f' ({code})' if code else ''}.")
        except requests.RequestException as exc:
            log.warning("single sign-on: provider error: %s", exc.__class__.__name__)
            return refused_page(request, f"{provider_name()} did not answer; try again in a few minutes.", status=503)

    @staticmethod
    def _state_expired(request) -> bool:
        """A state older than STATE_MAX_AGE_SECONDS is spent unused: dropped, and refused."""
        states = request.session.get("oidc_states")
        entry = states.get(request.GET.get("state", "")) if isinstance(states, dict) else None
        if entry is None or time.time() - float(entry.get("added_on", 0)) <= STATE_MAX_AGE_SECONDS:
            return False
        del states[request.GET["state"]]
        request.session.modified = True
        return True

    def login_failure(self):
        request = self.request
        reason = getattr(request, "sso_refusal", "")
        if not reason:
            error = request.GET.get("error", "")
            reason = f"{provider_name()} answered: {error}" if error else "this sign-in was not started here (state)"
        return refused_page(request, reason if reason.endswith(".") else f"{reason}.", status=403)

    def login_success(self):
        # Django logs the session in first, then the broker remembers which provider session
        # it belongs to (for the back-channel logout).
        response = super().login_success()
        login = getattr(self.request, "oidc_login", None)
        if login is not None:
            logout.remember_login_session(request=self.request, **login)
        return response


@method_decorator(csrf_exempt, name="dispatch")
class BackchannelLogoutView(View):
    """OpenID Connect Back-Channel Logout 1.0: the provider POSTs a signed logout token; the
    user's portal sessions named by it end and their consoles close."""

    http_method_names = ["post"]

    def post(self, request):
        token = request.POST.get("logout_token", "")
        try:
            ended = logout.apply_logout_token(token)
        except logout.LogoutTokenRefused as refused:
            log.warning("back-channel logout refused: %s", refused)
            return HttpResponse(f"logout token refused: {refused}", status=400, content_type="text/plain")
        except discovery.ProviderUnavailable:
            return HttpResponse("the provider's keys could not be read", status=503, content_type="text/plain")
        response = HttpResponse(f"{ended} session(s) ended", content_type="text/plain")
        response["Cache-Control"] = "no-cache, no-store"
        return response


class PortalLogoutView(LogoutView):
    """The portal's "Log out": ends the portal session, then, for a session opened through the
    provider, sends the browser to the provider's end_session_endpoint (RP-initiated logout)
    so the provider's session ends too."""

    def post(self, request, *args, **kwargs):
        end_session_url = logout.provider_logout_url(request)  # read before the session is flushed
        response = super().post(request, *args, **kwargs)
        return HttpResponseRedirect(end_session_url) if end_session_url else response


def single_sign_on_offer(*, next_url: str) -> dict:
    """What the login page says about single sign-on: a button, or why there is none now."""
    try:
        discovery.provider_metadata()
        available = True
    except discovery.ProviderUnavailable:
        available = False
    url = reverse("oidc:sign-in")
    if next_url:
        url = f"{url}?{urlencode({'next': next_url})}"
    return {"provider_name": provider_name(), "available": available, "url": url}
