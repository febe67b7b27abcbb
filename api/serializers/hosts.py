from rest_framework import serializers

from broker.models import Host


class HostSerializer(serializers.ModelSerializer):
    live_desktops = serializers.IntegerField(read_only=True)
    placed_vcpus = serializers.IntegerField(read_only=True, help_text="vCPUs of the desktops placed here.")
    placed_memory_mib = serializers.IntegerField(read_only=True, help_text="Memory of the desktops placed here.")

    class Meta:
        model = Host
        fields = ["id", "name", "kind", "farm", "libvirt_uri", "domain_type", "storage_group", "has_own_agent",
                  "is_enabled", "in_maintenance", "is_online", "cpus", "memory_mib", "vcpu_overcommit",
                  "memory_overcommit", "last_checked_at", "last_error", "offline_since", "fenced_at",
                  "sessions_running", "created_at", "live_desktops", "placed_vcpus", "placed_memory_mib"]
        read_only_fields = fields


class DrainRequestSerializer(serializers.Serializer):
    migrate = serializers.BooleanField(
        default=False, help_text="Also move the running desktops away by live migration (hosts of the same "
        "storage group); without it they run on until their users log off.")


class DrainResultSerializer(serializers.Serializer):
    host = serializers.IntegerField()
    in_maintenance = serializers.BooleanField()
    changed = serializers.BooleanField(help_text="False when the host already was in that state.")
    moving = serializers.ListField(child=serializers.CharField(), help_text="Desktops moving away.")
    staying = serializers.ListField(child=serializers.CharField(), help_text="Why the others stay.")
