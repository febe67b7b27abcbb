from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from broker import selectors
from broker.console.origin import origin_of_request
from broker.models import Desktop, DesktopState
from broker.models.desktops import LIVE_STATES
from broker.services.assignment import launch_desktop
from broker.services.errors import LaunchRefused
from broker.services.tickets import ConsoleRefused, issue_console_ticket

from .progress import desktop_progress


@login_required
@require_GET
def home(request):
    pools = list(selectors.entitled_pools(user=request.user))
    desktops = selectors.desktops_by_pool(user=request.user)
    rows = [{"pool": pool, "desktop": desktops.get(pool.pk)} for pool in pools]
    return render(request, "portal/home.html", {"rows": rows})


@login_required
@require_POST
def launch(request, pool_id):
    pool = get_object_or_404(selectors.entitled_pools(user=request.user), pk=pool_id)
    try:
        desktop = launch_desktop(user=request.user, pool=pool)
    except LaunchRefused as refused:
        messages.error(request, str(refused))
        return redirect("portal:home")
    return redirect("portal:desktop", desktop_id=desktop.pk)


def _own_desktop(request, desktop_id) -> Desktop:
    desktop = (
        Desktop.objects.select_related("pool", "host")
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
    desktop = _own_desktop(request, desktop_id)
    if desktop.state != DesktopState.RUNNING:
        return JsonResponse({"error": f"The desktop is {desktop.get_state_display().lower()}."}, status=409)
    protocol = desktop.pool.protocol
    try:
        token = issue_console_ticket(
            user=request.user,
            session_key=request.session.session_key,
            desktop=desktop,
            protocol=protocol,
            origin=origin_of_request(scheme=request.scheme, host=request.get_host()),
        )
    except ConsoleRefused as refused:
        return JsonResponse({"error": refused.reason, "code": refused.code}, status=403)
    scheme = "wss" if request.is_secure() else "ws"
    ws_url = f"{scheme}://{request.get_host()}/ws/console/{desktop.pk}/?ticket={token}"
    response = JsonResponse({"protocol": protocol, "url": ws_url})
    response["Cache-Control"] = "no-store"
    return response
