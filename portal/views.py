from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from broker import selectors
from broker.console.origin import origin_of_request
from broker.models import DataDiskBackup, Desktop, DesktopState, PublishedApp
from broker.models.desktops import LIVE_STATES
from broker.readiness import why_not_ready
from broker.services.assignment import launch_desktop
from broker.services.desktop_sessions import end_desktop_session
from broker.services.errors import LaunchRefused
from broker.console.close_codes import ConsoleRefused
from broker.console.ticket_rate import may_issue_console_ticket
from broker.console.tickets import grant_console
from identity.mfa.policy import is_verified, second_factor_url
from identity.services import audit

from .progress import desktop_progress


@login_required
@require_GET
def home(request):
    pools = list(selectors.entitled_pools(user=request.user).prefetch_related("applications"))
    desktops = selectors.desktops_by_pool(user=request.user)
    rows = []
    for pool in pools:
        # A farm offers its full desktop and each published application as a row of its own.
        if not pool.is_farm or pool.farm_offers_desktop:
            rows.append({"pool": pool, "application": None, "desktop": desktops.get((pool.pk, None))})
        if pool.is_farm:
            rows += [{"pool": pool, "application": app, "desktop": desktops.get((pool.pk, app.pk))}
                     for app in pool.applications.all() if app.is_enabled]
    for row in rows:
        # Why a desktop is not ready, in the employee's words (no host names, no errors).
        reason = why_not_ready(row["desktop"]) if row["desktop"] is not None else None
        row["why"] = reason.for_employee() if reason else None
    return render(request, "portal/home.html", {"rows": rows})


@login_required
@require_POST
def launch(request, pool_id):
    pool = get_object_or_404(selectors.entitled_pools(user=request.user), pk=pool_id)
    if pool.requires_mfa and not is_verified(request.user):
        messages.info(request, f"{pool} requires a second factor: confirm it is you, then launch again.")
        return redirect(second_factor_url(request.user, next_url=reverse("portal:home")))
    application = None
    if request.POST.get("app"):
        app_id = request.POST["app"]
        if not (app_id.isascii() and app_id.isdigit()):  # not an id: no such application (was a 500)
            raise Http404("No such application")
        application = get_object_or_404(PublishedApp, pk=int(app_id), pool=pool, is_enabled=True)
    try:
        desktop = launch_desktop(user=request.user, pool=pool, application=application, entitlement_checked=True)
    except LaunchRefused as refused:
        messages.error(request, str(refused))
        return redirect("portal:home")
    audit.record_launch(request=request, desktop=desktop)
    return redirect("portal:desktop", desktop_id=desktop.pk)


def _own_desktop(request, desktop_id) -> Desktop:
    desktop = (
        Desktop.objects.select_related("pool", "host", "application")
        .filter(pk=desktop_id, user=request.user, state__in=LIVE_STATES)
        .first()
    )
    if desktop is None:
        raise Http404("No such desktop")
    return desktop


@login_required
@require_GET
def desktop_page(request, desktop_id):
    desktop = _own_desktop(request, desktop_id)
    return render(request, "portal/desktop.html", {
        "desktop": desktop,
        "status_url": reverse("portal:desktop-status", args=[desktop.pk]),
        "ticket_url": reverse("portal:console-ticket", args=[desktop.pk]),
        "launch_url": reverse("portal:launch", args=[desktop.pool_id]),
    })


@login_required
@require_GET
def desktop_status(request, desktop_id):
    return JsonResponse(desktop_progress(_own_desktop(request, desktop_id)))


@login_required
@require_POST
def console_ticket(request, desktop_id):
    """A console ticket for the page: the pool's protocol, or the other one where the pool lets
    the user switch. The VNC password never leaves the server; SPICE's one-time password does
    (spice-html5 logs in itself) and expires with the ticket."""
    desktop = _own_desktop(request, desktop_id)
    if desktop.pool.requires_mfa and not is_verified(request.user):
        return JsonResponse({"error": "This desktop requires a login verified with a second factor.",
                             "code": "mfa_required"}, status=403)
    if desktop.state == DesktopState.MIGRATING:
        # Live migration: seconds. 503 is not final for the page: it asks again shortly.
        response = JsonResponse({"error": "The desktop is moving to another server."}, status=503)
        response["Retry-After"] = "1"
        return response
    if desktop.state != DesktopState.RUNNING:
        return JsonResponse({"error": f"The desktop is {desktop.get_state_display().lower()}."}, status=409)
    protocol = request.POST.get("protocol") or desktop.pool.protocol
    if protocol != desktop.pool.protocol and not desktop.pool.console_protocol_switch:
        return JsonResponse({"error": "This pool offers one console protocol only."}, status=403)
    if not may_issue_console_ticket(user=request.user):
        return JsonResponse({"error": "Too many console connections in the last minute; wait a minute and "
                                      "try again."}, status=429)
    try:
        grant = grant_console(
            user=request.user,
            session_key=request.session.session_key,
            desktop=desktop,
            protocol=protocol,
            origin=origin_of_request(scheme=request.scheme, host=request.get_host()),
        )
    except ConsoleRefused as refused:
        return JsonResponse({"error": refused.reason, "code": refused.code}, status=403)
    gateway = settings.VDI_CONSOLE_GATEWAY_URL or f"{'wss' if request.is_secure() else 'ws'}://{request.get_host()}"
    if settings.VDI_CONSOLE_GATEWAY_KIND == "websockify":
        ws_url = f"{gateway}/?token={grant.token}"  # websockify reads `token`; the plugin knows the desktop
    else:
        ws_url = f"{gateway}/ws/console/{desktop.pk}/?ticket={grant.token}"
    body = {"protocol": protocol, "url": ws_url}
    if grant.browser_password:
        body["password"] = grant.browser_password
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def end_session(request, desktop_id):
    """Log off: a floating desktop is wiped and replaced, a dedicated one powered off."""
    desktop = _own_desktop(request, desktop_id)
    end_desktop_session(desktop=desktop, actor=request.user, reason="logged off by the user")
    if desktop.pool.is_farm:
        messages.info(request, f"You logged off {desktop.application or desktop.pool}.")
    elif desktop.pool.is_floating:
        messages.info(request, f"You logged off {desktop.pool}. Your next launch gets a fresh desktop.")
    else:
        messages.info(request, f"Your {desktop.pool} desktop is shutting down; Launch starts it again.")
    return redirect("portal:home")


# -- restoring the user's own files --------------------------------------------------------------

@login_required
@require_GET
def files_page(request, desktop_id):
    """The backups of the user's data disk (date, size) and what a restore does, with the
    restore's progress (the desktop's state and its latest restore events)."""
    from broker.services.backups import restore_events

    desktop = _own_desktop(request, desktop_id)
    if not desktop.data_volume_name:
        raise Http404("This desktop has no data disk")
    backups = list(desktop.backups.filter(state=DataDiskBackup.State.DONE).order_by("-created_at")
                   .only("pk", "created_at", "size_bytes", "kind"))
    return render(request, "portal/files.html", {
        "desktop": desktop, "backups": backups, "events": restore_events(desktop),
        "restoring": desktop.state == DesktopState.RESTORING,
    })


@login_required
@require_POST
def restore_files(request, desktop_id, backup_id):
    """Restore one of the user's own desktop's backups (a backup of any other desktop is a 404,
    whoever owns it)."""
    from broker.services.backups import RestoreRefused, request_restore

    desktop = _own_desktop(request, desktop_id)
    backup = get_object_or_404(DataDiskBackup.objects.select_related("host"), pk=backup_id, desktop=desktop,
                               state=DataDiskBackup.State.DONE)
    backup.desktop = desktop
    try:
        request_restore(backup=backup, actor=request.user)
    except RestoreRefused as refused:
        messages.error(request, str(refused))
        return redirect("portal:files", desktop_id=desktop.pk)
    messages.info(request, f"Restoring your files as they were on {backup.created_at:%d %b %Y at %H:%M}: your "
                           "desktop shuts down, gets its data disk back from the backup and starts again.")
    return redirect("portal:files", desktop_id=desktop.pk)
