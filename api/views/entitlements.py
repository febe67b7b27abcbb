from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.response import Response

from broker.models import Entitlement
from broker.services.entitlements import grant_entitlement, withdraw_entitlement

from ..filters import EntitlementFilter
from ..serializers.entitlements import EntitlementSerializer
from .base import ReadOnlyScopedViewSet


class EntitlementViewSet(mixins.CreateModelMixin, mixins.DestroyModelMixin, ReadOnlyScopedViewSet):
    queryset = Entitlement.objects.select_related("user", "group").order_by("pool_id", "pk")
    serializer_class = EntitlementSerializer
    filterset_class = EntitlementFilter
    write_permissions = {"create": "add", "destroy": "delete"}

    @extend_schema(summary="Entitle one user or one group to a pool")
    def create(self, request, *args, **kwargs):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        entitlement = grant_entitlement(pool=data["pool"], user=data.get("user"), group=data.get("group"),
                                        actor=request.user)
        return Response(self.get_serializer(entitlement).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Withdraw an entitlement (the access it gave ends: consoles close, desktops are held)")
    def destroy(self, request, *args, **kwargs):
        withdraw_entitlement(entitlement=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
