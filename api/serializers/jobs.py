from rest_framework import serializers

from broker.models import Job


class JobSerializer(serializers.ModelSerializer):
    started_by_name = serializers.CharField(source="started_by.username", read_only=True, allow_null=True,
                                            default=None)
    percent = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = ["id", "kind", "target_key", "target_label", "state", "done", "total", "percent", "message",
                  "result", "error", "cancel_requested", "started_by", "started_by_name", "created_at",
                  "started_at", "updated_at", "finished_at"]
        read_only_fields = fields


class JobRefusedSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why it was refused (another job on the same target, no such row, "
                                             "finished already, not stoppable midway).")


class JobStartSerializer(serializers.Serializer):
    """What to start; each kind names its target."""

    kind = serializers.ChoiceField(choices=Job.Kind.choices)
    pool = serializers.IntegerField(required=False, help_text="pool_recompose, group_preprovision: the pool's id.")
    host = serializers.IntegerField(required=False, help_text="host_drain: the host's id.")
    image_version = serializers.IntegerField(required=False, help_text="image_checksum: the version's id.")
    group = serializers.IntegerField(required=False, help_text="group_preprovision: the group's id.")
    migrate = serializers.BooleanField(default=True, help_text="host_drain: move running desktops away.")
    allow_mass_removal = serializers.BooleanField(
        default=False, help_text="directory_sync: apply removals however many there are.")

    NEEDS = {
        Job.Kind.IMAGE_CHECKSUM: ["image_version"],
        Job.Kind.POOL_RECOMPOSE: ["pool"],
        Job.Kind.HOST_DRAIN: ["host"],
        Job.Kind.DIRECTORY_SYNC: [],
        Job.Kind.GROUP_PREPROVISION: ["pool", "group"],
    }

    def validate(self, data):
        missing = [name for name in self.NEEDS[data["kind"]] if data.get(name) is None]
        if missing:
            raise serializers.ValidationError({name: f"A {data['kind']} job needs it." for name in missing})
        return data


class ReconcileResultSerializer(serializers.Serializer):
    pool = serializers.IntegerField()
    done = serializers.DictField(help_text="What the pass did (created, rolled_over, cleared_failed, …).")


class HostCheckResultSerializer(serializers.Serializer):
    host = serializers.IntegerField()
    is_online = serializers.BooleanField()
    cpus = serializers.IntegerField(allow_null=True)
    memory_mib = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()


class FenceResultSerializer(serializers.Serializer):
    host = serializers.IntegerField()
    done = serializers.CharField(help_text="What happened, in words.")
    restarted = serializers.ListField(child=serializers.CharField())
    waiting = serializers.ListField(child=serializers.CharField())


class MessageRequestSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=500, help_text="Shown in the user's open console.")
