from broker.models import BrokerEvent, DesktopEvent, LiveMigration

from ..filters import BrokerEventFilter, DesktopEventFilter, LiveMigrationFilter
from ..serializers.events import BrokerEventSerializer, DesktopEventSerializer, LiveMigrationSerializer
from .base import ReadOnlyScopedViewSet


class DesktopEventViewSet(ReadOnlyScopedViewSet):
    queryset = DesktopEvent.objects.select_related("desktop", "actor").order_by("-created_at", "-pk")
    serializer_class = DesktopEventSerializer
    filterset_class = DesktopEventFilter
    ordering_fields = ["created_at"]


class BrokerEventViewSet(ReadOnlyScopedViewSet):
    queryset = BrokerEvent.objects.order_by("-created_at", "-pk")
    serializer_class = BrokerEventSerializer
    filterset_class = BrokerEventFilter
    ordering_fields = ["created_at"]


class LiveMigrationViewSet(ReadOnlyScopedViewSet):
    queryset = LiveMigration.objects.select_related("desktop").order_by("-created_at", "-pk")
    serializer_class = LiveMigrationSerializer
    filterset_class = LiveMigrationFilter
    ordering_fields = ["created_at", "finished_at"]
