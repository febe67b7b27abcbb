"""The admin's list of long actions (broker/services/jobs.py): each run with a progress bar that
moves while you watch (broker/static/broker/admin/job-progress.js asks `progress/` every second),
its result, and a cancel action where stopping is safe."""

import json

from django.contrib import admin, messages
from django.http import JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html

from .models import Job
from .services.jobs import JobRefused, may_run, request_cancel


def job_link(job: Job) -> str:
    return format_html('<a href="{}">{}</a>', reverse("admin:broker_job_change", args=[job.pk]), job)


def job_progress_data(job: Job) -> dict:
    return {"id": job.pk, "state": job.state, "state_label": job.get_state_display(), "done": job.done,
            "total": job.total, "percent": job.percent, "message": job.message, "active": job.is_active,
            "cancel_requested": job.cancel_requested}


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "target_label", "progress_bar", "message_text", "started_by"]
    list_filter = ["state", "kind"]
    search_fields = ["target_label", "message"]
    list_select_related = ["started_by"]
    fields = ["kind", "target_label", "state", "progress_bar", "message", "result_text", "error", "started_by",
              "cancel_requested", "created_at", "started_at", "finished_at"]
    readonly_fields = fields
    actions = ["cancel_jobs"]

    class Media:
        js = ["broker/admin/job-progress.js"]
        css = {"all": ["broker/admin/jobs.css"]}

    def has_add_permission(self, request):
        return False  # jobs start from the pools', hosts', images' and groups' actions

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a job's row is its record

    def has_cancel_permission(self, request):
        return any(may_run(request.user, kind) for kind in Job.Kind.values)

    @admin.display(description="Progress")
    def progress_bar(self, job):
        label = f"{job.percent} %" if job.percent is not None else job.get_state_display()
        return format_html(
            '<span class="vdi-job" data-job-id="{}" data-job-state="{}"{}>'
            '<progress max="100"{}></progress> <span class="vdi-job-label">{}</span></span>',
            job.pk, job.state, " data-job-active" if job.is_active else "",
            format_html(' value="{}"', job.percent) if job.percent is not None else "",
            f"{job.get_state_display()} · {label}" if job.is_active else job.get_state_display())

    @admin.display(description="Message")
    def message_text(self, job):
        return format_html('<span class="vdi-job-message" data-job-message="{}">{}</span>', job.pk,
                           job.error[:200] if job.state == Job.State.FAILED and job.error else job.message)

    @admin.display(description="Result")
    def result_text(self, job):
        if job.result is None:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(job.result, indent=2, ensure_ascii=False))

    @admin.action(description="Cancel the selected jobs (where stopping between steps is safe)",
                  permissions=["cancel"])
    def cancel_jobs(self, request, queryset):
        for job in queryset:
            if not may_run(request.user, job.kind):
                self.message_user(request, f"{job}: you may not cancel this kind of job.", messages.ERROR)
                continue
            try:
                request_cancel(job=job, actor=request.user)
            except JobRefused as refused:
                self.message_user(request, str(refused), messages.WARNING)
                continue
            self.message_user(request, f"{job}: cancel requested; it stops at its next step.")

    def get_urls(self):
        return [path("progress/", self.admin_site.admin_view(self.progress_view), name="broker_job_progress"),
                *super().get_urls()]

    def progress_view(self, request):
        """The progress of the jobs in `?ids=1,2,3` (at most 100), for the page's script."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "You may not see jobs."}, status=403)
        try:
            ids = [int(part) for part in request.GET.get("ids", "").split(",") if part][:100]
        except ValueError:
            return JsonResponse({"error": "ids: a comma-separated list of job ids."}, status=400)
        return JsonResponse({"jobs": [job_progress_data(job) for job in Job.objects.filter(pk__in=ids)]})
