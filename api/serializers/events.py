from rest_framework import serializers

from broker.models import BrokerEvent, DesktopEvent, LiveMigration


class DesktopEventSerializer(serializers.ModelSerializer):
    desktop_name = serializers.CharField(source="desktop.name", read_only=True)
    actor_name = serializers.CharField(source="actor.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = DesktopEvent
        fields = ["id", "desktop", "desktop_name", "from_state", "to_state", "message", "actor", "actor_name",
                  "created_at"]
        read_only_fields = fields


class BrokerEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = BrokerEvent
        fields = ["id", "kind", "host", "pool", "message", "created_at"]
        read_only_fields = fields


class LiveMigrationSerializer(serializers.ModelSerializer):
    desktop_name = serializers.CharField(source="desktop.name", read_only=True)
    percent_done = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = LiveMigration
        fields = ["id", "desktop", "desktop_name", "source", "destination", "reason", "state", "requested_by",
                  "data_total_bytes", "data_processed_bytes", "percent_done", "error", "created_at", "started_at",
                  "finished_at"]
        read_only_fields = fields
