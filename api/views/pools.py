from django.db.models import Count, Max, Q
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from broker.models import GoldenImage, GoldenImageVersion, Pool
from broker.models.desktops import LIVE_STATES
from broker.services.recompose import recompose_pool

from ..filters import GoldenImageVersionFilter, PoolFilter
from ..serializers.pools import (
    GoldenImageSerializer,
    GoldenImageVersionSerializer,
    PoolDetailSerializer,
    PoolSerializer,
    RecomposeResultSerializer,
)
from ..serializers.jobs import ReconcileResultSerializer
from .base import ReadOnlyScopedViewSet


class PoolViewSet(ReadOnlyScopedViewSet):
    queryset = Pool.objects.select_related("image").annotate(
        live_desktops=Count("desktops", filter=Q(desktops__state__in=LIVE_STATES)),
        desktops_in_use=Count("desktops", filter=Q(desktops__state__in=LIVE_STATES, desktops__user__isnull=False)),
    ).order_by("display_name", "pk")
    action_queryset = Pool.objects.select_related("image")
    serializer_class = PoolSerializer
    filterset_class = PoolFilter
    ordering_fields = ["name", "display_name", "created_at"]

    def get_serializer_class(self):
        return PoolDetailSerializer if self.action == "retrieve" else PoolSerializer

    @extend_schema(request=None, responses=RecomposeResultSerializer,
                   summary="Rebuild every desktop of the pool on the current image version (user data kept)")
    @action(detail=True, methods=["post"])
    def recompose(self, request, pk=None):
        pool = self.get_object()
        count = recompose_pool(pool=pool, actor=request.user)
        return Response(RecomposeResultSerializer({"pool": pool.pk, "recomposing": count}).data)

    @extend_schema(request=None, responses=ReconcileResultSerializer,
                   summary="Reconcile now: top up spares, roll over old ones, place waiting sessions")
    @action(detail=True, methods=["post"])
    def reconcile(self, request, pk=None):
        from broker.services.pools import reconcile_pool

        pool = self.get_object()
        return Response(ReconcileResultSerializer({"pool": pool.pk, "done": reconcile_pool(pool_id=pool.pk)}).data)


class GoldenImageViewSet(ReadOnlyScopedViewSet):
    queryset = GoldenImage.objects.annotate(
        current_version=Max("versions__number", filter=Q(versions__is_published=True))).order_by("name", "pk")
    serializer_class = GoldenImageSerializer
    ordering_fields = ["name", "created_at"]


class GoldenImageVersionViewSet(ReadOnlyScopedViewSet):
    queryset = GoldenImageVersion.objects.select_related("image").order_by("image__name", "-number", "pk")
    serializer_class = GoldenImageVersionSerializer
    filterset_class = GoldenImageVersionFilter
    ordering_fields = ["number", "created_at"]
