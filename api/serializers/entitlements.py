from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework import serializers

from broker.models import Entitlement, Pool

from .. import scoping


class EntitlementSerializer(serializers.ModelSerializer):
    """Read: who may launch which pool. Write (create): one user or one group, and a pool the
    caller may manage (another pool is "does not exist", as for a row never made)."""

    pool = serializers.PrimaryKeyRelatedField(queryset=Pool.objects.none())
    user = serializers.PrimaryKeyRelatedField(queryset=get_user_model().objects.all(), required=False,
                                              allow_null=True)
    group = serializers.PrimaryKeyRelatedField(queryset=Group.objects.all(), required=False, allow_null=True)
    username = serializers.CharField(source="user.username", read_only=True, allow_null=True, default=None)
    group_name = serializers.CharField(source="group.name", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Entitlement
        fields = ["id", "pool", "user", "username", "group", "group_name", "created_at"]
        read_only_fields = ["id", "created_at"]
        # The model's unique (pool, user) and (pool, group) would make both fields required here;
        # an entitlement that exists already is simply returned (grant_entitlement).
        validators = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None and request.user.is_authenticated:
            self.fields["pool"].queryset = scoping.writable_pools(request.user, Entitlement, "add")

    def validate(self, attrs):
        if bool(attrs.get("user")) == bool(attrs.get("group")):
            raise serializers.ValidationError("Entitle either one user or one group.")
        return attrs
