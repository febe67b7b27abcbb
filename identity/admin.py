from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone

from . import selectors
from .forms import AdminLoginForm
from .models import AuditEvent, DirectoryAccount, DirectoryGroup, DirectorySyncRun, LoginLockout, OidcIdentity
from .services import audit, sync, throttling
from .services.preprovision import PreprovisionRefused, dedicated_pools_of, preprovision_pool_for_group

# The admin's login page is throttled like the portal's (the backends do it) and says why.
admin.site.login_form = AdminLoginForm


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DirectorySyncRun)
class DirectorySyncRunAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "status", "trigger", "requested_by", "duration_seconds", "users_seen",
                    "groups_seen", "users_created", "users_updated", "users_deactivated", "users_reactivated",
                    "memberships_added", "memberships_removed", "removals_held", "first_error"]
    list_filter = ["status", "trigger"]
    readonly_fields = [f.name for f in DirectorySyncRun._meta.fields if f.name != "errors"] + ["error_list"]
    exclude = ["errors"]

    @admin.display(description="Seconds")
    def duration_seconds(self, run):
        return f"{run.duration.total_seconds():.1f}" if run.duration else "—"

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
            run = sync.request_sync(requested_by=request.user, allow_mass_removal=allow, request=request)
            messages.info(request, f"Directory sync #{run.pk} queued; this page shows its result once a worker "
                                   "has run it.")
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
    list_display = ["locked_at", "scope", "key", "failures", "locked_until", "in_force", "cleared_at", "cleared_by"]
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
    list_display = ["created_at", "kind", "username", "client_address", "target", "message"]
    list_filter = ["kind", "created_at"]
    search_fields = ["username", "client_address", "target", "message"]
    date_hierarchy = "created_at"
    readonly_fields = ["created_at", "kind", "actor", "username", "client_address", "target", "message"]
    exclude = ["log_entry_id"]

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
                    result = preprovision_pool_for_group(pool=pool, group=directory_group.group,
                                                         actor=request.user, request=request)
                except PreprovisionRefused as refused:
                    self.message_user(request, str(refused), messages.ERROR)
                    continue
                level = messages.WARNING if result.refused else messages.SUCCESS
                text = (f"{directory_group} → {pool}: {result.requested} desktop(s) requested, "
                        f"{result.already_had_one} member(s) already had one.")
                if result.refused:
                    text += f" Refused: {'; '.join(result.refused[:5])}"
                self.message_user(request, text, level)


@admin.register(DirectoryAccount)
class DirectoryAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "dn", "is_active", "inactive_reason", "missing_since", "created_at"]
    list_filter = ["inactive_reason", "user__is_active", ("missing_since", admin.EmptyFieldListFilter)]
    search_fields = ["user__username", "dn"]
    list_select_related = ["user"]

    @admin.display(boolean=True, description="Active", ordering="user__is_active")
    def is_active(self, account):
        return account.user.is_active


@admin.register(OidcIdentity)
class OidcIdentityAdmin(ReadOnlyAdmin):
    """Which account each identity provider subject opens. Deleting a link lets the subject's next
    sign-in link again (to the account named by its user-name claim)."""

    list_display = ["user", "subject", "issuer", "created_at", "last_login_at"]
    search_fields = ["user__username", "subject"]
    list_select_related = ["user"]

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser
