"""Who must have passed a second factor: staff always (the admin, the API with a session, and
the portal); anyone launching a pool that requires it (portal/views.py asks required_for_pool).

API token authentication (scripts) is not a session and is not affected."""

from urllib.parse import urlencode

from django.shortcuts import redirect
from django.urls import reverse
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication

from .factors import has_second_factor

# What a staff user without a verified factor may still open: the second step, enrolment, logout.
_OPEN_PREFIXES = ("/login/", "/logout/", "/account/", "/static/", "/api/", "/healthz", "/readyz", "/metrics")


def is_verified(user) -> bool:
    verified = getattr(user, "is_verified", None)
    return bool(verified and verified())


def second_factor_url(user, *, next_url: str) -> str:
    """Where to send a user whose session lacks a second factor: the step, or enrolment first."""
    name = "mfa:verify" if has_second_factor(user) else "mfa:account"
    return f"{reverse(name)}?{urlencode({'next': next_url})}"


class StaffNeedsSecondFactorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (user is not None and user.is_authenticated and user.is_staff and not is_verified(user)
                and not request.path.startswith(_OPEN_PREFIXES)):
            return redirect(second_factor_url(user, next_url=request.get_full_path()))
        return self.get_response(request)


class VerifiedSessionAuthentication(SessionAuthentication):
    """DRF's session authentication, refusing a staff session that did not pass a second factor."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None and result[0].is_staff and not is_verified(result[0]):
            raise exceptions.AuthenticationFailed("Staff sessions need a second factor: verify it in the portal "
                                                  "(or use an API token).")
        return result
