from django.contrib.auth.models import Group
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response

from broker.models import GoldenImageVersion, Host, Job, Pool
from broker.services.images import start_checksum
from broker.services.jobs import JobRefused, may_run, request_cancel
from broker.services.live_migration import start_drain
from broker.services.recompose import start_recompose
from identity.services.preprovision import PreprovisionRefused, start_preprovision
from identity.services.sync import start_sync_job

from .. import scoping
from ..serializers.jobs import JobRefusedSerializer, JobSerializer, JobStartSerializer
from .base import ReadOnlyScopedViewSet


class JobPermission(BasePermission):
    """Reading jobs: as for any resource (view_job; auditors; not operators). Starting and
    cancelling: the permission the admin's own action asks for that kind of job, checked by the
    view once it knows the kind; auditors never. Whoever may run no kind at all is refused at once."""

    message = "Your role does not allow this."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in SAFE_METHODS:
            return scoping.may_read(user, Job)
        return any(may_run(user, kind) for kind in Job.Kind.values)


class JobViewSet(mixins.CreateModelMixin, ReadOnlyScopedViewSet):
    queryset = Job.objects.select_related("started_by").order_by("-created_at", "-pk")
    serializer_class = JobSerializer
    permission_classes = [JobPermission]
    filterset_fields = ["kind", "state"]
    ordering_fields = ["created_at", "finished_at"]

    def get_queryset(self):
        # Writes (cancel) find the job among those the caller may read; the kind's permission is
        # checked on the row itself.
        return scoping.visible(self.request.user, Job.objects.select_related("started_by").order_by("-created_at",
                                                                                                       "-pk"))

    def _require(self, kind: str):
        if not may_run(self.request.user, kind):
            raise PermissionDenied(f"Your role does not allow starting or cancelling a {kind} job.")

    @extend_schema(request=JobStartSerializer, responses={202: JobSerializer, 409: JobRefusedSerializer},
                   summary="Start a long action: its job row, worked in the background")
    def create(self, request):
        body = JobStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        kind = data["kind"]
        self._require(kind)
        try:
            job = self._start(kind, data)
        except (JobRefused, PreprovisionRefused) as refused:
            return Response({"detail": str(refused)}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    def _start(self, kind, data):
        user = self.request.user

        def row(model, pk):
            found = model.objects.filter(pk=pk).first()
            if found is None:
                raise JobRefused(f"No such {model._meta.verbose_name}: {pk}.")
            return found

        if kind == Job.Kind.IMAGE_CHECKSUM:
            return start_checksum(version=row(GoldenImageVersion, data["image_version"]), actor=user)
        if kind == Job.Kind.POOL_RECOMPOSE:
            pool = row(Pool, data["pool"])
            if pool.is_farm:
                raise JobRefused(f"{pool} is a farm: its sessions are not built from an image.")
            return start_recompose(pool=pool, actor=user)
        if kind == Job.Kind.HOST_DRAIN:
            return start_drain(host=row(Host, data["host"]), actor=user, migrate=data["migrate"])
        if kind == Job.Kind.DIRECTORY_SYNC:
            return start_sync_job(requested_by=user, allow_mass_removal=data["allow_mass_removal"],
                                  request=self.request._request)
        return start_preprovision(pool=row(Pool, data["pool"]), group=row(Group, data["group"]), actor=user)

    @extend_schema(request=None, responses={200: JobSerializer, 409: JobRefusedSerializer},
                   summary="Cancel: a queued job at once, a running one at its next step (where its kind allows)")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = self.get_object()
        self._require(job.kind)
        try:
            job = request_cancel(job=job, actor=request.user)
        except JobRefused as refused:
            return Response({"detail": str(refused)}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job).data)
