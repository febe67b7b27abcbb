"""The second login step and the account page where users add and remove their factors."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice
from django.views.decorators.cache import never_cache

from ..models import AuditEvent
from ..services import audit
from . import enrolment, factors, passkeys, pending
from .policy import is_verified


def _next_url(request, default: str = "") -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or default
    if wanted and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return wanted
    return reverse("portal:home")


def _with_next(name: str, next_url: str, *args) -> str:
    return f"{reverse(name, args=args)}?{urlencode({'next': next_url})}"


def _json(text: str) -> HttpResponse:
    response = HttpResponse(text, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def _who_is_verifying(request):
    if request.user.is_authenticated:
        return request.user
    return pending.pending_user(request)


@never_cache  # a login under way: no copy of this page in any cache
@require_http_methods(["GET", "POST"])
def verify(request):
    """The second step: after the password at login, or later when a pool or the admin asks."""
    user = _who_is_verifying(request)
    next_url = _next_url(request, pending.next_url(request))
    if user is None:
        messages.info(request, "Log in again: the second step expired.")
        return redirect("portal:login")
    if request.user.is_authenticated and is_verified(request.user):
        return redirect(next_url)
    if not factors.has_second_factor(user):
        return redirect(_with_next("mfa:account", next_url))
    error = ""
    if request.method == "POST":
        try:
            device = factors.verify(request=request, user=user, code=request.POST.get("code", ""),
                                    passkey_response=request.POST.get("passkey_response", ""))
        except factors.SecondFactorRefused as refused:
            error = refused.message
        else:
            if not request.user.is_authenticated:
                auth_login(request, user, backend=user.backend)
            pending.finish(request)
            otp_login(request, device)
            audit.record_event(kind=AuditEvent.Kind.MFA_VERIFIED, request=request, actor=user,
                               target=factors.kind_of(device))
            return redirect(next_url)
    summary = factors.summary_of(user)
    return render(request, "portal/mfa_verify.html", {
        "error": error, "next": next_url, "summary": summary, "pending_username": user.get_username(),
    }, status=400 if error else 200)


@never_cache
@require_POST
def passkey_challenge(request):
    """navigator.credentials.get() options for the user at the second step (or removing a device)."""
    user = _who_is_verifying(request)
    if user is None:
        return JsonResponse({"error": "Log in again: the second step expired."}, status=403)
    return _json(passkeys.authentication_options(request, user))


def _may_change_factors(request) -> bool:
    # A password alone must not add or remove factors of an account that has some.
    return is_verified(request.user) or not factors.has_second_factor(request.user)


def _gate(request):
    return redirect(_with_next("mfa:verify", reverse("mfa:account")))


@login_required
@require_http_methods(["GET"])
def account(request):
    if not _may_change_factors(request):
        return _gate(request)
    summary = factors.summary_of(request.user)
    return render(request, "portal/account.html", {
        "summary": summary, "next": _next_url(request, reverse("portal:home")),
        "verified": is_verified(request.user),
    })


@login_required
@require_POST
def start_authenticator_app(request):
    if not _may_change_factors(request):
        return _gate(request)
    device = enrolment.start_authenticator_app(user=request.user)
    return redirect(_with_next("mfa:authenticator-confirm", _next_url(request), device.pk))


@login_required
@require_http_methods(["GET", "POST"])
def confirm_authenticator_app(request, device_id):
    if not _may_change_factors(request):
        return _gate(request)
    device = get_object_or_404(TOTPDevice, pk=device_id, user=request.user, confirmed=False)
    error = ""
    if request.method == "POST":
        try:
            confirmed = enrolment.confirm_authenticator_app(request=request, device=device,
                                                            code=request.POST.get("code", ""))
        except enrolment.TryAgainLater:
            confirmed, error = False, "Too many tries in a row: wait a few seconds, then type the current code."
        else:
            error = "" if confirmed else "That code does not match; check the app's clock and type the current code."
        if confirmed:
            otp_login(request, device)
            messages.success(request, "Your authenticator app is set up. Keep recovery codes too, in case you "
                                      "lose the phone.")
            return redirect(_with_next("mfa:account", _next_url(request)))
    response = render(request, "portal/mfa_authenticator.html", {
        "device": device, "qr_svg": enrolment.qr_code_svg(device), "secret": enrolment.secret_of(device),
        "error": error, "next": _next_url(request),
    }, status=400 if error else 200)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def passkey_registration_options(request):
    if not _may_change_factors(request):
        return JsonResponse({"error": "Verify your second factor first."}, status=403)
    return _json(passkeys.registration_options(request, request.user))


@login_required
@require_POST
def add_passkey(request):
    if not _may_change_factors(request):
        return _gate(request)
    try:
        device = enrolment.add_passkey(request=request, user=request.user,
                                       response=request.POST.get("passkey_response", ""),
                                       name=request.POST.get("name", ""))
    except passkeys.PasskeyRefused as refused:
        messages.error(request, str(refused))
    else:
        otp_login(request, device)
        messages.success(request, f"Passkey \u201c{device.name}\u201d added.")
    return redirect(_with_next("mfa:account", _next_url(request)))


@login_required
@require_POST
def recovery_codes(request):
    if not _may_change_factors(request):
        return _gate(request)
    try:
        codes = enrolment.new_recovery_codes(request=request, user=request.user)
    except enrolment.EnrolmentRefused as refused:
        messages.error(request, str(refused))
        return redirect("mfa:account")
    response = render(request, "portal/mfa_recovery_codes.html", {"codes": codes, "next": _next_url(request)})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def remove_device(request):
    """Remove a factor; a current factor must be shown again (a code, a recovery code or a passkey)."""
    device = Device.from_persistent_id(request.POST.get("device", ""))
    if device is None or device.user_id != request.user.pk or not device.confirmed:
        messages.error(request, "No such device on your account.")
        return redirect("mfa:account")
    try:
        factors.verify(request=request, user=request.user, code=request.POST.get("code", ""),
                       passkey_response=request.POST.get("passkey_response", ""))
    except factors.SecondFactorRefused as refused:
        messages.error(request, f"Not removed. {refused.message}")
        return redirect("mfa:account")
    enrolment.remove_device(request=request, user=request.user, device=device)
    messages.success(request, "Removed.")
    return redirect("mfa:account")
