from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from broker.models import ConsoleSession, Desktop, Host, LiveMigration
from broker.services.desktop_sessions import end_desktop_session
from broker.services.live_migration import CannotMigrate, request_migration
from broker.services.removal import request_desktop_deletion

from ..filters import ConsoleSessionFilter, DesktopFilter
from ..serializers.desktops import (
    ActionResultSerializer,
    ConsoleSessionSerializer,
    DesktopDetailSerializer,
    DesktopSerializer,
    MoveRequestSerializer,
)
from ..serializers.jobs import MessageRequestSerializer
from ..serializers.events import LiveMigrationSerializer
from .base import ReadOnlyScopedViewSet


def _result(desktop, done: str, code=status.HTTP_200_OK):
    desktop.refresh_from_db(fields=["state"])
    return Response(ActionResultSerializer({"desktop": desktop.pk, "state": desktop.state, "done": done}).data,
                    status=code)


class DesktopViewSet(ReadOnlyScopedViewSet):
    queryset = Desktop.objects.select_related("pool", "user", "host", "image_version").order_by("-created_at", "-pk")
    action_queryset = Desktop.objects.select_related("pool", "host")
    serializer_class = DesktopSerializer
    filterset_class = DesktopFilter
    ordering_fields = ["created_at", "name", "state", "state_changed_at"]

    def get_serializer_class(self):
        # The reason it is not ready costs a few queries: on the detail only, not per list row.
        return DesktopDetailSerializer if self.action == "retrieve" else DesktopSerializer

    @extend_schema(request=MoveRequestSerializer, responses={202: LiveMigrationSerializer, 409: ActionResultSerializer},
                   summary="Move the running desktop to another host by live migration")
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        desktop = self.get_object()
        body = MoveRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        destination = None
        if body.validated_data.get("destination") is not None:
            destination = Host.objects.filter(pk=body.validated_data["destination"], kind=Host.Kind.HYPERVISOR).first()
            if destination is None:
                return _result(desktop, "not moved: no such hypervisor host", status.HTTP_400_BAD_REQUEST)
        try:
            migration = request_migration(desktop=desktop, reason=LiveMigration.Reason.ADMIN, actor=request.user,
                                          destination=destination)
        except CannotMigrate as refused:
            return _result(desktop, str(refused), status.HTTP_409_CONFLICT)
        return Response(LiveMigrationSerializer(migration).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=ActionResultSerializer,
                   summary="End the user's session: floating: wipe and replace; dedicated: power off; farm: log off")
    @action(detail=True, methods=["post"], url_path="end-session")
    def end_session(self, request, pk=None):
        desktop = self.get_object()
        if desktop.state == "deleted":
            return _result(desktop, "nothing to end: the desktop is deleted", status.HTTP_409_CONFLICT)
        end_desktop_session(desktop=desktop, actor=request.user,
                            reason=f"ended by {request.user.get_username()} through the API")
        return _result(desktop, "session ended; its consoles were closed")

    @extend_schema(request=MessageRequestSerializer, responses={200: ActionResultSerializer,
                                                                409: ActionResultSerializer},
                   summary="Send a message to the desktop's user, shown in their open console")
    @action(detail=True, methods=["post"])
    def message(self, request, pk=None):
        from broker.services.console_messages import MessageRefused, send_console_message

        desktop = self.get_object()
        body = MessageRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            send_console_message(desktop=desktop, text=body.validated_data["text"], actor=request.user)
        except MessageRefused as refused:
            return _result(desktop, str(refused), status.HTTP_409_CONFLICT)
        return _result(desktop, "message shown in the desktop's open consoles")

    @extend_schema(request=None, responses={202: ActionResultSerializer, 409: ActionResultSerializer},
                   summary="Delete the desktop: power off, remove its domain and disks (the row stays as history)")
    def destroy(self, request, pk=None):
        desktop = self.get_object()
        if not request_desktop_deletion(desktop=desktop, actor=request.user,
                                        reason=f"deletion requested by {request.user.get_username()} (API)"):
            return _result(desktop, "not deleted: it is deleted already, or changed meanwhile", status.HTTP_409_CONFLICT)
        return _result(desktop, "deleting: the worker removes its domain and disks", status.HTTP_202_ACCEPTED)


class ConsoleSessionViewSet(ReadOnlyScopedViewSet):
    queryset = ConsoleSession.objects.select_related("user", "desktop").order_by("-opened_at", "-pk")
    serializer_class = ConsoleSessionSerializer
    filterset_class = ConsoleSessionFilter
    ordering_fields = ["opened_at", "closed_at", "bytes_to_client"]
