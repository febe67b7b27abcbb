from django.db.models import Count, Q, Sum
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from broker.models import Host
from broker.models.desktops import LIVE_STATES
from broker.selectors import PLACED_STATES
from broker.services.hosts import set_host_maintenance
from broker.services.live_migration import drain_host

from ..filters import HostFilter
from ..serializers.hosts import DrainRequestSerializer, DrainResultSerializer, HostSerializer
from ..serializers.jobs import FenceResultSerializer, HostCheckResultSerializer
from .base import ReadOnlyScopedViewSet

placed = Q(desktops__state__in=PLACED_STATES)


class HostViewSet(ReadOnlyScopedViewSet):
    queryset = Host.objects.annotate(
        live_desktops=Count("desktops", filter=Q(desktops__state__in=LIVE_STATES)),
        placed_vcpus=Sum("desktops__pool__vcpus", filter=placed, default=0),
        placed_memory_mib=Sum("desktops__pool__memory_mib", filter=placed, default=0),
    ).order_by("name", "pk")
    action_queryset = Host.objects.all()
    serializer_class = HostSerializer
    filterset_class = HostFilter
    ordering_fields = ["name", "created_at"]

    def _result(self, host, *, changed, moving=(), staying=()):
        host.refresh_from_db(fields=["in_maintenance"])
        return Response(DrainResultSerializer({"host": host.pk, "in_maintenance": host.in_maintenance,
                                               "changed": changed, "moving": list(moving),
                                               "staying": list(staying)}).data)

    @extend_schema(request=DrainRequestSerializer, responses=DrainResultSerializer,
                   summary="Drain: no new desktops here; with migrate, move the running ones away")
    @action(detail=True, methods=["post"])
    def drain(self, request, pk=None):
        host = self.get_object()
        body = DrainRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if body.validated_data["migrate"]:
            was = host.in_maintenance
            drained = drain_host(host=host, actor=request.user, migrate=True)
            return self._result(host, changed=not was, moving=drained["moving"], staying=drained["staying"])
        changed = set_host_maintenance(host=host, in_maintenance=True, actor=request.user)
        return self._result(host, changed=changed)

    @extend_schema(request=None, responses=DrainResultSerializer, summary="End maintenance: accept new desktops")
    @action(detail=True, methods=["post"], url_path="end-maintenance")
    def end_maintenance(self, request, pk=None):
        host = self.get_object()
        changed = set_host_maintenance(host=host, in_maintenance=False, actor=request.user)
        return self._result(host, changed=changed)

    @extend_schema(request=None, responses=HostCheckResultSerializer,
                   summary="Check now: is the host answering, how big is it (session hosts: its agent is asked)")
    @action(detail=True, methods=["post"])
    def check(self, request, pk=None):
        from broker.services.hosts import check_host

        host = check_host(host_id=self.get_object().pk)
        return Response(HostCheckResultSerializer({"host": host.pk, "is_online": host.is_online, "cpus": host.cpus,
                                                   "memory_mib": host.memory_mib,
                                                   "last_error": host.last_error}).data)

    @extend_schema(request=None, responses={200: FenceResultSerializer, 409: FenceResultSerializer},
                   summary="The host is off (fenced by hand): restart its dedicated desktops on other hosts")
    @action(detail=True, methods=["post"])
    def fence(self, request, pk=None):
        from broker.services.high_availability import declare_fenced

        host = self.get_object()
        if host.is_online:
            return Response(FenceResultSerializer({"host": host.pk, "done": f"{host.name} answers: it is not dead. "
                                                   "Drain it instead.", "restarted": [], "waiting": []}).data,
                            status=status.HTTP_409_CONFLICT)
        done = declare_fenced(host=host, how=f"{request.user.get_username()} confirmed it is powered off (API)",
                              actor=request.user)
        return Response(FenceResultSerializer({
            "host": host.pk, "restarted": done["restarted"], "waiting": done["waiting"],
            "done": f"{len(done['restarted'])} restarting elsewhere, {len(done['rehomed'])} moved while off, "
                    f"{len(done['written_off'])} written off, {len(done['waiting'])} waiting"}).data)
