"""Long actions as jobs: a row per run (broker/models/jobs.py), worked by a thin Celery task
(broker/job_tasks.py) that calls `run_job`, which hands the row to the kind's runner.

A runner reports through `JobProgress.step()`, which writes done/total/message (at most a few
times a second) and raises `JobCancelled` where the admin asked to stop: runners call it only
between steps, where stopping leaves nothing half-done. A runner that waits on other workers (a
rolling recompose, a drain's live migrations) returns `FollowUp`: the job stays running and its
task comes back a moment later, so no worker sits waiting.

Who may start or cancel a job of each kind is the permission the admin's own action asks for.
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from ..enqueue import enqueue_after_commit
from ..models import Job

log = logging.getLogger(__name__)
K, State = Job.Kind, Job.State
PROGRESS_WRITE_INTERVAL_S = 0.25
# A job that has not moved for this long lost its worker (killed mid-run, its task lost with a
# Redis restart): it no longer blocks a new run on the same target.
STALE_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class JobKind:
    runner: str  # "module:function", called with (job, progress)
    permission: str  # the model permission the admin's action asks for
    cancellable: bool  # may it be stopped once running (between its steps)?


KINDS = {
    K.IMAGE_CHECKSUM: JobKind("broker.services.images:checksum_job", "broker.change_goldenimageversion", True),
    K.POOL_RECOMPOSE: JobKind("broker.services.recompose:recompose_job", "broker.change_pool", True),
    K.HOST_DRAIN: JobKind("broker.services.live_migration:drain_job", "broker.change_host", True),
    K.DIRECTORY_SYNC: JobKind("identity.services.sync:directory_sync_job", "identity.add_directorysyncrun", False),
    K.GROUP_PREPROVISION: JobKind("identity.services.preprovision:preprovision_job", "broker.change_pool", True),
}


class JobRefused(Exception):
    """A job that may not start or stop (the reason is for the admin)."""


class JobCancelled(Exception):
    """Raised by JobProgress.step() where the admin asked the job to stop; a runner may raise it
    again with what it did so far (`result`)."""

    def __init__(self, result=None):
        super().__init__("cancelled")
        self.result = result


@dataclass(frozen=True)
class FollowUp:
    """A runner's answer "not finished; look again in `seconds`"."""

    seconds: float = 2.0


def may_run(user, kind: str) -> bool:
    """May `user` start (and cancel) jobs of `kind`? Auditors never."""
    from api.scoping import is_auditor

    if not (user and user.is_authenticated and user.is_active):
        return False
    if user.is_superuser:
        return True
    return user.is_staff and not is_auditor(user) and user.has_perm(KINDS[kind].permission)


def start_job(*, kind: str, target_key: str, target_label: str, started_by=None, params: dict | None = None) -> Job:
    """A queued row and, once committed, its task. Refused while a job of the same kind runs on
    the same target (JobRefused names it)."""
    if kind not in KINDS:
        raise JobRefused(f"No such kind of job: {kind}.")
    expire_stale_jobs(kind=kind, target_key=target_key)
    try:
        with transaction.atomic():
            job = Job.objects.create(kind=kind, target_key=target_key, target_label=target_label[:200],
                                     started_by=started_by, params=params or {}, message="waiting for a worker")
            enqueue_after_commit("broker.job_tasks.run_job_task", job.pk)
    except IntegrityError:
        running = Job.objects.filter(kind=kind, target_key=target_key, state__in=Job.ACTIVE_STATES).first()
        raise JobRefused(f"{running or 'A job of this kind'} is already under way; wait for it or cancel it.")
    return job


def expire_stale_jobs(*, kind: str | None = None, target_key: str | None = None) -> int:
    """Fail the active jobs that have not moved for STALE_AFTER (of one target, or all)."""
    now = timezone.now()
    cut = now - STALE_AFTER
    stale = Job.objects.filter(state__in=Job.ACTIVE_STATES).filter(
        Q(updated_at__lt=cut) | Q(updated_at__isnull=True, created_at__lt=cut))
    if kind is not None:
        stale = stale.filter(kind=kind, target_key=target_key)
    return stale.update(state=State.FAILED, finished_at=now, updated_at=now, message="interrupted",
                        error=f"no progress for {int(STALE_AFTER.total_seconds() // 60)} min: its worker stopped "
                              "or its task was lost; start it again")


def request_cancel(*, job: Job, actor=None) -> Job:
    """A queued job is cancelled at once; a running one stops at its next step, where its kind
    allows that. JobRefused when it is finished already or may not be stopped midway."""
    now = timezone.now()
    who = actor.get_username() if actor else "the broker"
    if Job.objects.filter(pk=job.pk, state=State.QUEUED).update(
            state=State.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now,
            message=f"cancelled by {who} before it started"):
        job.refresh_from_db()
        return job
    if not KINDS[job.kind].cancellable:
        raise JobRefused(f"A {job.get_kind_display().lower()} cannot be stopped once running; wait for its end.")
    if not Job.objects.filter(pk=job.pk, state=State.RUNNING).update(cancel_requested=True, updated_at=now):
        raise JobRefused(f"{job} has finished already.")
    job.refresh_from_db()
    return job


class JobProgress:
    """The runner's handle on its row."""

    def __init__(self, job: Job):
        self.job = job
        self._written_at = 0.0

    def step(self, *, done: int | None = None, total: int | None = None, message: str | None = None,
             force: bool = False, may_stop: bool = True) -> None:
        """Record progress; raise JobCancelled when the admin asked to stop (and `may_stop`:
        the runner is between steps)."""
        if done is not None:
            self.job.done = done
        if total is not None:
            self.job.total = total
        if message is not None:
            self.job.message = message[:500]
        now = time.monotonic()
        if not force and now - self._written_at < PROGRESS_WRITE_INTERVAL_S:
            return
        self._written_at = now
        Job.objects.filter(pk=self.job.pk).update(done=self.job.done, total=self.job.total,
                                                  message=self.job.message, updated_at=timezone.now())
        if may_stop and Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists():
            raise JobCancelled()

    def stop_requested(self) -> bool:
        return Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists()


def run_job(*, job_id: int) -> Job | None:
    """Work the job (its task calls this): start a queued one, or look again at one that a
    runner left following other workers. A finished job, or a duplicate delivery of a running
    one that follows nobody, is left alone."""
    now = timezone.now()
    started = Job.objects.filter(pk=job_id, state=State.QUEUED).update(state=State.RUNNING, started_at=now,
                                                                      updated_at=now, message="started")
    job = Job.objects.select_related("started_by").filter(pk=job_id).first()
    if job is None or job.state != State.RUNNING:
        return job
    if not started and not job.params.get("following"):
        return job  # another delivery of a task that is running it now
    module, function = KINDS[job.kind].runner.split(":")
    runner = getattr(import_module(module), function)
    progress = JobProgress(job)
    try:
        outcome = runner(job, progress)
    except JobCancelled as stop:
        return _finish(job, State.CANCELLED, message=f"cancelled at {job.done} of {job.total or '?'}",
                       result=stop.result)
    except Exception as exc:  # the runner's failure is the job's result, not the worker's
        log.exception("job %s failed", job.pk)
        return _finish(job, State.FAILED, message="failed", error=f"{exc.__class__.__name__}: {exc}"[:4000])
    if isinstance(outcome, FollowUp):
        Job.objects.filter(pk=job.pk).update(done=job.done, total=job.total, message=job.message[:500],
                                             params={**job.params, "following": True}, updated_at=timezone.now())
        enqueue_after_commit("broker.job_tasks.run_job_task", job.pk, countdown=outcome.seconds)
        return job
    result, state, message = outcome
    return _finish(job, state, message=message, result=result)


def _finish(job: Job, state: str, *, message: str, result=None, error: str = "") -> Job:
    now = timezone.now()
    fields = {"state": state, "message": message[:500], "result": result, "error": error, "finished_at": now,
              "updated_at": now, "done": job.done, "total": job.total}
    if state == State.SUCCEEDED and job.total is not None:
        fields["done"] = job.total
    Job.objects.filter(pk=job.pk, state=State.RUNNING).update(**fields)
    job.refresh_from_db()
    return job


def succeeded(result, message: str):
    return result, State.SUCCEEDED, message


def failed(result, message: str):
    return result, State.FAILED, message


def cancelled(result, message: str):
    return result, State.CANCELLED, message


def remember(job: Job, **params) -> None:
    """Keep what a following runner needs at its next look (the desktops it works on)."""
    job.params = {**job.params, **params}
    Job.objects.filter(pk=job.pk).update(params=job.params)


def active_jobs():
    return Job.objects.filter(state__in=Job.ACTIVE_STATES)

