"""The dashboard page and the two JSON documents its script polls: the live figures (every few
seconds) and the chart series (every minute). Staff only, checked here on every request."""

from functools import wraps

from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import selectors
from .access import may_see_dashboard


def staff_json(view):
    @wraps(view)
    def guarded(request, *args, **kwargs):
        if not may_see_dashboard(request.user):
            status = 403 if request.user.is_authenticated else 401
            return JsonResponse({"error": "The dashboard is for administrators; log in to the admin."}, status=status)
        return view(request, *args, **kwargs)
    return guarded


@never_cache
@require_GET
def dashboard_page(request):
    if not may_see_dashboard(request.user):
        # Staff without the right to read hosts and pools (the admin's login already kept others out).
        return TemplateResponse(request, "admin/dashboard/refused.html",
                                {**admin.site.each_context(request), "title": "Dashboard"}, status=403)
    return TemplateResponse(request, "admin/dashboard/dashboard.html", {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "figures": selectors.live_figures(),
        "poll_seconds": settings.VDI_DASHBOARD_POLL_SECONDS,
        "sample_seconds": settings.VDI_DASHBOARD_SAMPLE_SECONDS,
    })


@never_cache
@require_GET
@staff_json
def live_json(request):
    return JsonResponse(selectors.live_figures())


@never_cache
@require_GET
@staff_json
def series_json(request):
    span = request.GET.get("span", "24h")
    if span not in selectors.RANGES:
        return JsonResponse({"error": f"span must be one of {', '.join(selectors.RANGES)}"}, status=400)
    return JsonResponse(selectors.chart_series(span=span))
