from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from broker.models import ConsoleSession, Desktop


class DesktopSerializer(serializers.ModelSerializer):
    pool_name = serializers.CharField(source="pool.name", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True, allow_null=True, default=None)
    host_name = serializers.CharField(source="host.name", read_only=True, allow_null=True, default=None)
    image_version_number = serializers.IntegerField(source="image_version.number", read_only=True,
                                                    allow_null=True, default=None)

    class Meta:
        model = Desktop
        fields = ["id", "name", "uuid", "pool", "pool_name", "user", "username", "host", "host_name",
                  "image_version", "image_version_number", "application", "state", "state_changed_at",
                  "last_error", "assigned_at", "delete_after", "created_at"]
        read_only_fields = fields


class NotReadyReasonSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="The cause: no_host_capacity, pool_backing_off, guest_not_answering, "
                                           "queued_behind_others, host_unavailable, failed, …")
    summary = serializers.CharField(help_text="The cause in plain words (what the employee sees).")
    details = serializers.ListField(child=serializers.CharField(), help_text="Each host's refusal, and the like.")
    last_error = serializers.CharField()
    retry_at = serializers.DateTimeField(allow_null=True)
    serial_log = serializers.ListField(child=serializers.CharField(),
                                       help_text="The last lines the guest printed on its serial console.")


class DesktopDetailSerializer(DesktopSerializer):
    not_ready_reason = serializers.SerializerMethodField(
        help_text="Why the desktop is not ready (null when it runs): broker/readiness.py.")

    class Meta(DesktopSerializer.Meta):
        fields = [*DesktopSerializer.Meta.fields, "not_ready_reason"]
        read_only_fields = fields

    @extend_schema_field(NotReadyReasonSerializer(allow_null=True))
    def get_not_ready_reason(self, desktop):
        from broker.readiness import why_not_ready

        reason = why_not_ready(desktop)
        return reason.for_admin() if reason else None


class ConsoleSessionSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    desktop_name = serializers.CharField(source="desktop.name", read_only=True)
    pool = serializers.IntegerField(source="desktop.pool_id", read_only=True)
    is_open = serializers.BooleanField(read_only=True)

    class Meta:
        model = ConsoleSession
        fields = ["id", "user", "username", "desktop", "desktop_name", "pool", "protocol", "client_address",
                  "opened_at", "last_seen_at", "last_input_at", "closed_at", "close_code", "close_reason",
                  "bytes_to_client", "bytes_to_desktop", "is_open"]
        read_only_fields = fields


class MoveRequestSerializer(serializers.Serializer):
    destination = serializers.IntegerField(required=False, allow_null=True,
                                           help_text="A host id; empty: the broker picks the host with most room.")


class ActionResultSerializer(serializers.Serializer):
    desktop = serializers.IntegerField()
    state = serializers.CharField(help_text="The desktop's state after the request.")
    done = serializers.CharField(help_text="What happened, in words.")
