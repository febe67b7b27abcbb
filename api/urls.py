from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from .views.desktops import ConsoleSessionViewSet, DesktopViewSet
from .views.entitlements import EntitlementViewSet
from .views.events import BrokerEventViewSet, DesktopEventViewSet, LiveMigrationViewSet
from .views.hosts import HostViewSet
from .views.jobs import JobViewSet
from .views.pools import GoldenImageVersionViewSet, GoldenImageViewSet, PoolViewSet

router = DefaultRouter()
router.register("pools", PoolViewSet, basename="pool")
router.register("images", GoldenImageViewSet, basename="image")
router.register("image-versions", GoldenImageVersionViewSet, basename="image-version")
router.register("hosts", HostViewSet, basename="host")
router.register("desktops", DesktopViewSet, basename="desktop")
router.register("sessions", ConsoleSessionViewSet, basename="session")
router.register("entitlements", EntitlementViewSet, basename="entitlement")
router.register("desktop-events", DesktopEventViewSet, basename="desktop-event")
router.register("broker-events", BrokerEventViewSet, basename="broker-event")
router.register("live-migrations", LiveMigrationViewSet, basename="live-migration")
router.register("jobs", JobViewSet, basename="job")

app_name = "api"
urlpatterns = [
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file of its own (no inline script): the
    # portal's Content-Security-Policy (script-src 'self') lets it run.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]
