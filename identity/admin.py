from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from broker.admin_jobs import job_link
from broker.services.jobs import JobRefused
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import selectors
from .forms import AdminLoginForm
from .models import (AuditEvent, DirectoryAccount, DirectoryGroup, DirectorySyncRun, LoginLockout, OidcIdentity,
                     PasskeyDevice)
from .services import audit, sync, throttling
from .services.preprovision import PreprovisionRefused, dedicated_pools_of, start_preprovision

# The admin's login page is throttled like the portal's (the backends do it) and says why.
admin.site.login_form = AdminLoginForm


def _log_in_through_the_portal(request, extra_context=None):
    # One login for everybody: the portal's, with its second step (staff always need one).
    from django.contrib.auth.views import redirect_to_login

    return redirect_to_login(request.GET.get("next") or reverse("admin:index"), login_url="portal:login")


admin.site.login = _log_in_through_the_portal


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DirectorySyncRun)
class DirectorySyncRunAdmin(ReadOnlyAdmin):
    # What fits a laptop's screen; every count is on the run's own page.
    list_display = ["created_at", "status", "trigger", "requested_by", "duration_seconds", "users_seen",
                    "changes", "first_error"]
    list_filter = ["status", "trigger"]
    readonly_fields = [f.name for f in DirectorySyncRun._meta.fields if f.name != "errors"] + ["error_list"]
    exclude = ["errors"]

    @admin.display(description="Seconds")
    def duration_seconds(self, run):
        return f"{run.duration.total_seconds():.1f}" if run.duration else "—"

    @admin.display(description="Changes")
    def changes(self, run):
        """'+3 −1 users, +5 −2 memberships, 4 held' in one narrow column."""
        parts = [f"+{run.users_created + run.users_reactivated} −{run.users_deactivated} users",
                 f"+{run.memberships_added} −{run.memberships_removed} memberships"]
        if run.removals_held:
            parts.append(f"{run.removals_held} held")
        return ", ".join(parts)

    @admin.display(description="Errors")
    def first_error(self, run):
        if not run.errors:
            return ""
        more = f" (+{len(run.errors) - 1} more)" if len(run.errors) > 1 else ""
        return f"{run.errors[0][:200]}{more}"

    @admin.display(description="Errors")
    def error_list(self, run):
        return "\n".join(run.errors) or "—"

    def get_urls(self):
        return [
            path("run-now/", self.admin_site.admin_view(self.run_now), name="identity_directorysyncrun_run_now"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        last = selectors.last_sync_run()
        extra_context = {
            **(extra_context or {}),
            "last_run": last,
            "last_run_summary": sync.summary(last) if last else "",
            "can_run": self._may_run(request),
            "run_now_url": reverse("admin:identity_directorysyncrun_run_now"),
        }
        return super().changelist_view(request, extra_context=extra_context)

    def _may_run(self, request):
        return request.user.is_superuser or request.user.has_perm("identity.add_directorysyncrun")

    def run_now(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self._may_run(request):
            messages.error(request, "You may not run the directory sync.")
        else:
            allow = request.POST.get("allow_mass_removal") == "1"
            try:
                job = sync.start_sync_job(requested_by=request.user, allow_mass_removal=allow, request=request)
            except JobRefused as refused:
                messages.warning(request, str(refused))
            else:
                messages.info(request, format_html("Directory sync started — follow {}; this page shows its run "
                                                   "once it has finished.", job_link(job)))
        return HttpResponseRedirect(reverse("admin:identity_directorysyncrun_changelist"))


class ActiveLockoutFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "In force"), ("ended", "Expired or cleared")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(cleared_at__isnull=True, locked_until__gt=now)
        if self.value() == "ended":
            return queryset.filter(Q(cleared_at__isnull=False) | Q(locked_until__lte=now))
        return queryset


@admin.register(LoginLockout)
class LoginLockoutAdmin(ReadOnlyAdmin):
    list_display = ["locked_at", "scope", "key", "failures", "locked_until", "in_force", "cleared_at"]
    list_filter = [ActiveLockoutFilter, "scope"]
    search_fields = ["key"]
    readonly_fields = [f.name for f in LoginLockout._meta.fields]
    actions = ["clear_lockouts"]

    @admin.display(boolean=True, description="In force")
    def in_force(self, lockout):
        return lockout.cleared_at is None and lockout.locked_until > timezone.now()

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("identity.change_loginlockout")

    @admin.action(description="Clear the selected lockouts (the user may try again now)",
                  permissions=["change"])
    def clear_lockouts(self, request, queryset):
        cleared = sum(throttling.clear_lockout(lockout=lockout, actor=request.user, request=request)
                      for lockout in queryset)
        self.message_user(request, f"Cleared {cleared} lockout(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "username", "target", "message_start"]  # the address: on the page
    list_filter = ["kind", "created_at"]
    search_fields = ["username", "client_address", "target", "message"]
    date_hierarchy = "created_at"
    readonly_fields = ["created_at", "kind", "actor", "username", "client_address", "target", "message"]
    exclude = ["log_entry_id"]

    @admin.display(description="Message", ordering="message")
    def message_start(self, event):
        """The list fits a laptop's screen: the start of the message; the whole one on the event's page."""
        return event.message if len(event.message) <= 90 else f"{event.message[:88]}…"

    def changelist_view(self, request, extra_context=None):
        audit.import_admin_log()
        return super().changelist_view(request, extra_context=extra_context)


@admin.register(DirectoryGroup)
class DirectoryGroupAdmin(ReadOnlyAdmin):
    list_display = ["name", "dn", "member_count", "entitled_pools", "missing_since"]
    list_filter = [("missing_since", admin.EmptyFieldListFilter)]
    search_fields = ["name", "dn"]
    actions = ["preprovision_desktops"]

    def get_queryset(self, request):
        return selectors.directory_groups_with_counts()

    @admin.display(description="Directory members", ordering="members")
    def member_count(self, group):
        return group.members

    @admin.display(description="Entitled pools", ordering="pools")
    def entitled_pools(self, group):
        return group.pools

    def has_preprovision_permission(self, request):
        # Groups are read-only here; pre-provisioning adds desktops to pools, so it takes the
        # permission that reconciling a pool takes.
        return request.user.has_perm("broker.change_pool")

    @admin.action(description="Pre-provision a desktop for every member, in each dedicated pool the group "
                              "is entitled to", permissions=["preprovision"])
    def preprovision_desktops(self, request, queryset):
        for directory_group in queryset.select_related("group"):
            pools = list(dedicated_pools_of(directory_group.group))
            if not pools:
                self.message_user(request, f"{directory_group}: not entitled to any dedicated pool.", messages.WARNING)
            for pool in pools:
                try:
                    job = start_preprovision(pool=pool, group=directory_group.group, actor=request.user)
                except (PreprovisionRefused, JobRefused) as refused:
                    self.message_user(request, str(refused), messages.ERROR)
                    continue
                self.message_user(request, format_html("{} → {}: pre-provisioning — follow {}", directory_group,
                                                       pool, job_link(job)))


@admin.register(DirectoryAccount)
class DirectoryAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "dn", "is_active", "inactive_reason", "missing_since", "created_at"]
    list_filter = ["inactive_reason", "user__is_active", ("missing_since", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "dn"]
    list_select_related = ["user"]

    @admin.display(boolean=True, description="Active", ordering="user__is_active")
    def is_active(self, account):
        return account.user.is_active


class SecondFactorAdmin(admin.ModelAdmin):
    """A user's second factors: listed, and removable (a lost phone or key), never added, changed
    or read out here: django-otp's own pages show a TOTP device's key and QR code to any staff
    user allowed to view them. Users add factors themselves (portal → Account security);
    `manage.py reset_mfa USER` removes all of a user's factors."""

    list_display = ["user", "name", "confirmed"]
    search_fields = ["user__username", "name"]
    list_select_related = ["user"]
    fields = ["user", "name", "confirmed"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PasskeyDevice)
class PasskeyDeviceAdmin(SecondFactorAdmin):
    list_display = ["user", "name", "created_at", "last_used_at"]
    fields = ["user", "name", "created_at", "last_used_at", "sign_count"]
    readonly_fields = fields


for _model in (TOTPDevice, StaticDevice):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, SecondFactorAdmin)


@admin.register(OidcIdentity)
class OidcIdentityAdmin(ReadOnlyAdmin):
    """Which account each identity provider subject opens. Deleting a link lets the subject's next
    sign-in link again (to the account named by its user-name claim)."""

    list_display = ["user", "subject", "issuer", "created_at", "last_login_at"]
    search_fields = ["user__username", "subject"]
    list_select_related = ["user"]

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser
