from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from broker.models import GoldenImage, GoldenImageVersion, Pool

from .desktops import NotReadyReasonSerializer


class PoolSerializer(serializers.ModelSerializer):
    image_name = serializers.CharField(source="image.name", read_only=True, allow_null=True, default=None)
    live_desktops = serializers.IntegerField(read_only=True, help_text="Desktops not deleted.")
    desktops_in_use = serializers.IntegerField(read_only=True, help_text="Live desktops assigned to a user.")

    class Meta:
        model = Pool
        fields = ["id", "name", "display_name", "description", "kind", "image", "image_name", "host", "vcpus",
                  "memory_mib", "protocol", "min_spares", "max_desktops", "spares_powered_on",
                  "disconnect_timeout_minutes", "recompose_after", "is_enabled", "consecutive_failures",
                  "backoff_until", "last_reconciled_at", "created_at", "live_desktops", "desktops_in_use"]
        read_only_fields = fields


class PoolDetailSerializer(PoolSerializer):
    not_ready_reasons = serializers.SerializerMethodField(
        help_text="What keeps the pool from its target (spares ready, sessions placed); empty when nothing.")

    class Meta(PoolSerializer.Meta):
        fields = [*PoolSerializer.Meta.fields, "not_ready_reasons"]
        read_only_fields = fields

    @extend_schema_field(NotReadyReasonSerializer(many=True))
    def get_not_ready_reasons(self, pool):
        from broker.readiness import why_pool_short

        return [reason.for_admin() for reason in why_pool_short(pool)]


class GoldenImageSerializer(serializers.ModelSerializer):
    current_version = serializers.IntegerField(read_only=True, allow_null=True,
                                               help_text="Number of the newest published version.")

    class Meta:
        model = GoldenImage
        fields = ["id", "name", "display_name", "description", "created_at", "current_version"]
        read_only_fields = fields


class GoldenImageVersionSerializer(serializers.ModelSerializer):
    image_name = serializers.CharField(source="image.name", read_only=True)

    class Meta:
        model = GoldenImageVersion
        fields = ["id", "image", "image_name", "number", "path", "size_bytes", "sha256", "notes", "is_published",
                  "created_at"]
        read_only_fields = fields


class RecomposeResultSerializer(serializers.Serializer):
    pool = serializers.IntegerField()
    recomposing = serializers.IntegerField(help_text="Desktops sent to be rebuilt on the current image.")
