from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, Sum
from django.utils.html import format_html

from .models import (
    BrokerEvent,
    DataDiskBackup,
    ConsoleSession,
    Desktop,
    DesktopEvent,
    DesktopState,
    Entitlement,
    GoldenImage,
    GoldenImageVersion,
    Host,
    LiveMigration,
    Pool,
    PoolNetwork,
    PoolScheduleRule,
    PublishedApp,
)
from .models.schedules import first_overlap, week_second_label
from .models.desktops import LIVE_STATES


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "status", "cpu_commitment", "memory_commitment", "live_desktops",
                    "last_checked_at"]
    list_select_related = ["farm"]
    list_filter = ["kind", "farm", "is_enabled", "in_maintenance", "is_online", "domain_type"]
    search_fields = ["name", "libvirt_uri"]
    readonly_fields = ["is_online", "cpus", "memory_mib", "cpu_commitment", "memory_commitment",
                       "memory_available_mib", "load_average", "sessions_running", "last_checked_at", "offline_since",
                       "fenced_at", "last_error", "agent_command"]

    @admin.display(description="Agent (session hosts)")
    def agent_command(self, obj):
        """The command that starts this host's agent on the host itself."""
        if not obj.pk or not obj.is_session_host:
            return "-"
        return (f"celery -A config worker -Q {obj.agent_queue} --pool threads --concurrency 8 "
                f"-n {obj.agent_queue}@%h   (as root, with the portal's DATABASE_URL and REDIS_URL)")
    actions = ["drain_and_move", "drain", "end_maintenance", "check_now", "confirm_powered_off",
               "return_to_service"]

    @admin.action(description="The host is off (fenced by hand): restart its dedicated desktops on other hosts",
                  permissions=["change"])
    def confirm_powered_off(self, request, queryset):
        from .services.high_availability import declare_fenced

        for host in queryset:
            if host.is_online:
                self.message_user(request, f"{host.name} answers: it is not dead. Drain it instead.", messages.ERROR)
                continue
            done = declare_fenced(host=host, how="an admin confirmed it is powered off", actor=request.user)
            self.message_user(request, f"{host.name}: {len(done['restarted'])} desktop(s) restarting elsewhere, "
                                       f"{len(done['rehomed'])} moved while off, {len(done['written_off'])} written "
                                       f"off, {len(done['waiting'])} waiting (disks only on that host).")

    @admin.action(description="Return to service after a fence (the host was repaired)", permissions=["change"])
    def return_to_service(self, request, queryset):
        fenced = list(queryset.filter(fenced_at__isnull=False))
        Host.objects.filter(pk__in=[host.pk for host in fenced]).update(fenced_at=None, is_enabled=True)
        for host in fenced:
            BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host,
                                       message=f"{host.name} returned to service by {request.user}")
        self.message_user(request, f"{len(fenced)} host(s) take desktops again.")

    @admin.action(description="Drain and move running desktops away (live migration to hosts of the same "
                              "storage group)", permissions=["change"])
    def drain_and_move(self, request, queryset):
        from .admin_jobs import job_link
        from .services.jobs import JobRefused
        from .services.live_migration import start_drain

        for host in queryset:
            try:
                job = start_drain(host=host, actor=request.user, migrate=True)
            except JobRefused as refused:
                self.message_user(request, str(refused), messages.WARNING)
                continue
            self.message_user(request, format_html("{}: draining — follow {}", host.name, job_link(job)))

    @admin.action(description="Drain: put in maintenance (no new desktops; running ones stay)",
                  permissions=["change"])
    def drain(self, request, queryset):
        from .services.hosts import set_host_maintenance

        for host in queryset:
            set_host_maintenance(host=host, in_maintenance=True, actor=request.user)
        self.message_user(request, "New desktops go to other hosts now; desktops already here keep running.")

    @admin.action(description="End maintenance (accept new desktops again)", permissions=["change"])
    def end_maintenance(self, request, queryset):
        from .services.hosts import set_host_maintenance

        for host in queryset:
            set_host_maintenance(host=host, in_maintenance=False, actor=request.user)
        self.message_user(request, "The hosts accept new desktops again.")

    @admin.action(description="Check now (is it answering, how big is it)", permissions=["change"])
    def check_now(self, request, queryset):
        from .services.hosts import check_host

        for host in queryset:
            host = check_host(host_id=host.pk)
            level = messages.SUCCESS if host.is_online else messages.ERROR
            state = f"online, {host.cpus} CPUs, {host.memory_mib} MiB" if host.is_online else \
                f"OFFLINE: {host.last_error}"
            self.message_user(request, f"{host.name}: {state}", level)

    def get_queryset(self, request):
        from .selectors import PLACED_STATES

        placed = Q(desktops__state__in=PLACED_STATES)
        return super().get_queryset(request).annotate(
            _live=Count("desktops", filter=Q(desktops__state__in=LIVE_STATES)),
            _vcpus=Sum("desktops__pool__vcpus", filter=placed),
            _memory=Sum("desktops__pool__memory_mib", filter=placed),
        )

    @admin.display(description="Live desktops", ordering="_live")
    def live_desktops(self, obj):
        return obj._live

    @admin.display(description="Status")
    def status(self, obj):
        if obj.fenced_at:
            return "fenced (dead)"
        if not obj.is_enabled:
            return "disabled"
        if not obj.is_online:
            return "OFFLINE"
        return "draining" if obj.in_maintenance else "online"

    @admin.display(description="vCPUs placed / allowed", ordering="_vcpus")
    def cpu_commitment(self, obj):
        """What desktops placed here ask for, against the CPUs times the overcommit ratio."""
        if obj.is_session_host:
            return f"{obj.sessions_running or 0} sessions" if obj.sessions_running is not None else "-"
        return _commitment(obj._vcpus or 0, obj.cpus, obj.vcpu_overcommit, unit="")

    @admin.display(description="Memory placed / allowed", ordering="_memory")
    def memory_commitment(self, obj):
        if obj.is_session_host:
            return f"{obj.memory_available_mib / 1024:.1f} GiB free" if obj.memory_available_mib else "-"
        return _commitment((obj._memory or 0) / 1024, obj.memory_mib and obj.memory_mib / 1024,
                           obj.memory_overcommit, unit=" GiB")


def render_reasons(reasons, *, none: str):
    """Reasons (broker/readiness.py) for the admin: the summary, each host's refusal, the last
    error, the guest's serial log."""
    from django.utils.html import format_html, format_html_join

    if not reasons:
        return none
    parts = []
    for reason in reasons:
        details = format_html_join("", "<li>{}</li>", ((line,) for line in reason.details))
        error = format_html("<br>Last error: <code>{}</code>", reason.last_error) if reason.last_error else ""
        log = (format_html('<br>Serial log (last lines):<pre class="vdi-serial-log">{}</pre>',
                           "\n".join(reason.serial_log)) if reason.serial_log else "")
        parts.append(format_html('<div class="vdi-why" data-why="{}"><strong>{}</strong>{}{}{}</div>', reason.code,
                                 reason.summary, format_html("<ul>{}</ul>", details) if details else "", error, log))
    return format_html_join("", "{}", ((part,) for part in parts))


def _commitment(placed: float, physical: float | None, ratio: float, *, unit: str) -> str:
    """'6 / 5 (120 % of physical, limit 250 %)': placed against physical times the ratio."""
    number = (lambda value: f"{value:.1f}") if unit else (lambda value: f"{value:.0f}")
    if not physical:
        return f"{number(placed)}{unit} placed (size not measured yet)"
    return (f"{number(placed)} / {number(physical * ratio)}{unit} "
            f"({100 * placed / physical:.0f} % of physical, limit {100 * ratio:.0f} %)")


class GoldenImageVersionInline(admin.TabularInline):
    """Versions are listed here; a new one is published through "Golden image versions → Add",
    which checks the file on a host first."""

    model = GoldenImageVersion
    extra = 0
    fields = ["number", "path", "size_bytes", "sha256", "is_published", "notes", "created_at"]
    readonly_fields = ["number", "path", "size_bytes", "sha256", "created_at"]

    def has_add_permission(self, request, obj=None):
        return False


class PublishVersionForm(forms.ModelForm):
    check_on_host = forms.ModelChoiceField(
        queryset=Host.objects.all(), help_text="The file is checked through this host's libvirt before it is "
        "recorded; every host that runs the pools must have it at the same path.")

    class Meta:
        model = GoldenImageVersion
        fields = ["image", "path", "notes"]

    def clean(self):
        from .hypervisor import HypervisorError
        from .services.images import check_image_file

        cleaned = super().clean()
        host, path = cleaned.get("check_on_host"), cleaned.get("path")
        if host and path:
            try:
                self.checked = check_image_file(path=path, host=host)
            except HypervisorError as exc:
                raise forms.ValidationError(f"Not published: {exc}") from exc
        return cleaned


@admin.register(GoldenImageVersion)
class GoldenImageVersionAdmin(admin.ModelAdmin):
    list_display = ["image", "number", "path", "size_bytes", "is_published", "created_at"]  # sha256: on its page
    list_filter = ["image", "is_published"]
    readonly_fields = ["number", "size_bytes", "sha256", "created_at"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = PublishVersionForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["image", "path", "check_on_host", "notes"]
        return ["image", "number", "path", "size_bytes", "sha256", "is_published", "notes", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (["image", "path"] if obj else [])

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        from .services.images import publish_image_version

        version = publish_image_version(image=obj.image, path=obj.path, host=form.cleaned_data["check_on_host"],
                                        notes=obj.notes, checked=form.checked, actor=request.user)
        obj.pk = version.pk
        self.message_user(request, f"Published {version}. Floating pools replace their spares now; dedicated "
                                   "pools move over when you recompose them. Its checksum is computed by a job "
                                   "(see Jobs).")


@admin.register(GoldenImage)
class GoldenImageAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "current_version_number"]
    search_fields = ["name", "display_name"]
    inlines = [GoldenImageVersionInline]

    @admin.display(description="Current version")
    def current_version_number(self, obj):
        version = obj.current_version()
        return f"v{version.number}" if version else "none published"


class PublishedAppInline(admin.TabularInline):
    """Farms: applications offered on their own (each opens a session that runs only it)."""

    model = PublishedApp
    extra = 0
    fields = ["name", "display_name", "command", "icon", "is_enabled"]


class EntitlementInline(admin.TabularInline):
    model = Entitlement
    extra = 1
    autocomplete_fields = ["user", "group"]


class ScheduleRuleFormSet(forms.BaseInlineFormSet):
    """Rules of one pool may not overlap: at any moment at most one applies, and the pool's
    page can say plainly what happens next. Checked here, across the rules as submitted."""

    def clean(self):
        super().clean()
        rules = [form.instance for form in self.forms
                 if form.is_valid() and form.cleaned_data and not self._should_delete_form(form)]
        overlap = first_overlap(rules)
        if overlap:
            a, b, at = overlap
            raise forms.ValidationError(
                f"“{a}” ({a.when_label}) and “{b}” ({b.when_label}) overlap from {week_second_label(at)}. "
                "At any time at most one rule may apply: shorten one, or split it.")


class PoolScheduleRuleInline(admin.TabularInline):
    """Dedicated and floating pools: spares and their power state by weekday and time."""

    model = PoolScheduleRule
    formset = ScheduleRuleFormSet
    extra = 0
    fields = ["name", "weekdays", "start_time", "end_time", "min_spares", "spares_powered_on"]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        from django.contrib.admin.widgets import AdminTimeWidget
        from django.db import models

        if isinstance(db_field, models.TimeField):
            kwargs["widget"] = AdminTimeWidget(format="%H:%M")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def __init__(self, *args, **kwargs):
        from django.conf import settings

        super().__init__(*args, **kwargs)
        self.verbose_name_plural = (f"Capacity schedule (times in {settings.TIME_ZONE}; outside every rule the "
                                    "pool's own spares and power setting apply)")


class PoolNetworkInline(admin.TabularInline):
    """Dedicated and floating pools: the network each host plugs the desktops' NIC into."""

    model = PoolNetwork
    extra = 0
    fields = ["host", "kind", "name", "vlan_tag", "dhcp_server"]
    verbose_name_plural = ("Network (per host; a row without a host applies to every other host; "
                           "no row: desktops have no network card)")


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["display_name", "kind", "image", "in_use", "spares_ready", "provisioning", "failed",
                    "live_of_max", "health", "last_reconciled_at"]
    list_select_related = ["image"]
    list_filter = ["kind", "protocol", "is_enabled"]
    search_fields = ["name", "display_name"]
    readonly_fields = ["overview", "why_short", "capacity_schedule", "consecutive_failures", "backoff_until",
                       "last_reconciled_at"]
    inlines = [EntitlementInline, PoolScheduleRuleInline, PublishedAppInline]
    actions = ["reconcile_now", "recompose_now"]

    class Media:
        css = {"all": ["broker/admin/schedules.css"]}

    def get_inlines(self, request, obj):
        # Published applications belong to farms, capacity schedules to pools that keep spares.
        if obj is not None and obj.is_farm:
            return [EntitlementInline, PublishedAppInline]
        return [EntitlementInline, PoolNetworkInline, PoolScheduleRuleInline]
    fieldsets = [
        (None, {"fields": ["overview", "name", "display_name", "description", "kind", "image", "host",
                           "is_enabled", "requires_mfa"]}),
        ("Desktops", {"fields": ["vcpus", "memory_mib", "protocol", "linked_clones", "data_disk_gib",
                                 "naming_pattern"]}),
        ("Network", {"fields": ["isolate_desktops", "filter_traffic"],
                     "description": "Where desktops plug in: the Network rows below."}),
        ("Capacity", {"fields": ["min_spares", "max_desktops", "spares_powered_on", "capacity_schedule"],
                      "description": "Spares and their power state when no rule of the capacity schedule "
                                     "(below) applies."}),
        ("Farm (shared sessions)", {"fields": ["farm_offers_desktop", "max_sessions_per_host",
                                               "max_concurrent_logons_per_host", "session_geometry"]}),
        ("Image updates", {"fields": ["recompose_after"]}),
        ("Backups of the data disks", {"fields": ["backup_every_hours", "backup_keep", "keep_backups_of_deleted_desktops_days"],
                                       "description": "Dedicated pools with a data disk: how often each desktop's "
                                                      "data disk is copied to the backup storage, and how many copies "
                                                      "are kept."}),
        ("Sessions", {"fields": ["disconnect_timeout_minutes", "revoked_desktop_grace_hours"]}),
        ("Health", {"fields": ["why_short", "consecutive_failures", "backoff_until", "last_reconciled_at"]}),
    ]

    def get_queryset(self, request):
        S = DesktopState
        return super().get_queryset(request).prefetch_related("schedule_rules").annotate(
            _in_use=Count("desktops", filter=Q(desktops__user__isnull=False, desktops__state__in=LIVE_STATES)),
            _spares=Count("desktops", filter=Q(desktops__user__isnull=True,
                                               desktops__state__in=(S.RUNNING, S.STOPPED))),
            _provisioning=Count("desktops", filter=Q(desktops__state__in=(S.QUEUED, S.CLONING, S.STARTING,
                                                                          S.RECOMPOSING))),
            _failed=Count("desktops", filter=Q(desktops__state=S.FAILED)),
            _live=Count("desktops", filter=Q(desktops__state__in=LIVE_STATES)),
        )

    @admin.display(description="In use", ordering="_in_use")
    def in_use(self, obj):
        return obj._in_use

    @admin.display(description="Spares ready / wanted")
    def spares_ready(self, obj):
        """'3 / 4 on' and, when the capacity schedule changes it, '→ 2 off Mon 10:00' below."""
        from django.utils.html import format_html

        from .selectors import pool_capacity

        if obj.is_farm:
            return "-"
        capacity = pool_capacity(pool=obj)
        if capacity.next is None:
            return f"{obj._spares} / {capacity.current.short_label}"
        return format_html('{} / {}<br><span class="quiet vdi-next-change">→ {} {}</span>', obj._spares,
                           capacity.current.short_label, capacity.next.short_label, capacity.next_at_label)

    @admin.display(description="Capacity now / next change")
    def capacity_schedule(self, obj):
        from django.conf import settings

        from .selectors import pool_capacity

        if not obj.pk or obj.is_farm:
            return "-"
        capacity = pool_capacity(pool=obj)
        source = f" (rule “{capacity.rule}”)" if capacity.rule else ""
        zone = f" ({settings.TIME_ZONE})" if capacity.next else ""
        return f"{capacity.describe()}{zone}{source}"

    @admin.display(description="Provisioning")
    def provisioning(self, obj):
        return obj._provisioning

    @admin.display(description="Errors")
    def failed(self, obj):
        return obj._failed

    @admin.display(description="Live / max")
    def live_of_max(self, obj):
        return f"{obj._live} / {obj.max_desktops}"

    @admin.display(description="Health")
    def health(self, obj):
        from django.utils import timezone

        if obj.backoff_until and obj.backoff_until > timezone.now():
            return f"backing off until {obj.backoff_until:%H:%M} ({obj.consecutive_failures} failures)"
        return "ok" if not obj.consecutive_failures else f"{obj.consecutive_failures} recent failures"

    @admin.display(description="Why isn't it ready?")
    def why_short(self, obj):
        from .readiness import why_pool_short

        return render_reasons(why_pool_short(obj) if obj.pk else [], none="Nothing: the pool is at its target.")

    @admin.display(description="Overview")
    def overview(self, obj):
        from django.utils.html import format_html_join

        if not obj.pk:
            return "-"
        by_state = obj.desktops.values_list("state").annotate(n=Count("pk")).order_by("state")
        rows = format_html_join(", ", "{}: {}", ((state, n) for state, n in by_state))
        return rows or "no desktops yet"

    @admin.action(description="Reconcile now (top up spares, roll over old spares)", permissions=["change"])
    def reconcile_now(self, request, queryset):
        from .services.pools import reconcile_pool

        for pool in queryset:
            done = reconcile_pool(pool_id=pool.pk)
            self.message_user(request, f"{pool}: {done}")

    @admin.action(description="Recompose now: rebuild every desktop on the current image (user data kept)",
                  permissions=["change"])
    def recompose_now(self, request, queryset):
        from .admin_jobs import job_link
        from .services.jobs import JobRefused
        from .services.recompose import start_recompose

        for pool in queryset.exclude(kind=Pool.Kind.FARM):
            try:
                job = start_recompose(pool=pool, actor=request.user)
            except JobRefused as refused:
                self.message_user(request, str(refused), messages.WARNING)
                continue
            self.message_user(request, format_html("{}: recomposing a few desktops at a time — follow {}", pool,
                                                   job_link(job)))


@admin.register(Entitlement)
class EntitlementAdmin(admin.ModelAdmin):
    list_display = ["pool", "user", "group", "created_at"]
    list_filter = ["pool"]
    autocomplete_fields = ["user", "group"]


class DesktopEventInline(admin.TabularInline):
    model = DesktopEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "from_state", "to_state", "message", "actor"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class DataDiskBackupInline(admin.TabularInline):
    model = DataDiskBackup
    fk_name = "desktop"
    verbose_name_plural = "Backups of the data disk (restore one from Data disk backups)"
    extra = 0
    can_delete = False
    fields = ["created_at", "kind", "state", "size", "taken_live", "finished_at", "error", "restore_link"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Size")
    def size(self, obj):
        return _size(obj.size_bytes)

    @admin.display(description="Restore")
    def restore_link(self, obj):
        from django.urls import reverse
        from django.utils.html import format_html

        if obj.state != DataDiskBackup.State.DONE:
            return "-"
        return format_html('<a href="{}?desktop__id__exact={}">restore…</a>',
                           reverse("admin:broker_datadiskbackup_changelist"), obj.desktop_id)


def _size(size_bytes):
    return "-" if size_bytes is None else f"{size_bytes / 2**20:.1f} MiB"


class PublishedAppFilter(admin.RelatedFieldListFilter):
    """The applications to filter by, named with their farm in one query (not one per app)."""

    def field_choices(self, field, request, model_admin):
        return [(app.pk, str(app)) for app in PublishedApp.objects.select_related("pool")]


@admin.register(Desktop)
class DesktopAdmin(admin.ModelAdmin):
    list_display = ["name", "pool", "user", "application", "host", "state", "age", "idle", "image_version"]
    list_select_related = ["pool", "user", "application__pool", "host", "image_version__image"]
    list_filter = ["state", "pool", "host", ("application", PublishedAppFilter)]
    search_fields = ["name", "user__username"]
    readonly_fields = ["name", "uuid", "state", "state_changed_at", "why_not_ready", "last_error", "vnc_port",
                       "spice_port", "host", "image_version", "pool", "mac_address", "created_at"]
    fields = ["name", "pool", "user", "host", "image_version", "state", "state_changed_at", "why_not_ready",
              "last_error",
              "vnc_port", "spice_port", "mac_address", "uuid", "created_at"]
    inlines = [DataDiskBackupInline, DesktopEventInline]
    actions = ["delete_desktops_on_host", "reset_desktops", "log_off_sessions", "send_message", "move_to_another_host",
               "back_up_now"]

    @admin.display(description="Why isn't it ready?")
    def why_not_ready(self, obj):
        from .readiness import why_not_ready

        reason = why_not_ready(obj) if obj.pk else None
        return render_reasons([reason] if reason else [], none="It is ready (running).")

    def get_inlines(self, request, obj):
        if obj is not None and not obj.data_volume_name:
            return [DesktopEventInline]
        return self.inlines

    @admin.action(description="Back up the data disk now (dedicated desktops; the desktop keeps running)",
                  permissions=["change"])
    def back_up_now(self, request, queryset):
        from .services.backups import request_backup

        count = sum(request_backup(desktop=desktop, kind=DataDiskBackup.Kind.MANUAL, actor=request.user)
                    for desktop in queryset.select_related("host").exclude(state=DesktopState.DELETED))
        self.message_user(request, f"Backing up the data disks of {count} desktop(s); see each desktop's backups.")

    @admin.action(description="Move to another host (live migration; the user's console reconnects by itself)",
                  permissions=["change"])
    def move_to_another_host(self, request, queryset):
        from .services.live_migration import CannotMigrate, request_migration

        moving = 0
        for desktop in queryset.select_related("host", "pool"):
            try:
                request_migration(desktop=desktop, reason=LiveMigration.Reason.ADMIN, actor=request.user)
                moving += 1
            except CannotMigrate as refused:
                self.message_user(request, str(refused), messages.WARNING)
        if moving:
            self.message_user(request, f"{moving} desktop(s) moving; see Live migrations for their progress.")

    @admin.display(description="Age")
    def age(self, obj):
        from django.utils.timesince import timesince

        return timesince(obj.created_at) if obj.state != DesktopState.DELETED else "-"

    def get_queryset(self, request):
        from .console.sessions import with_console_activity

        # The "Idle" column's console times in the list's own query, not two queries a row.
        return with_console_activity(super().get_queryset(request))

    @admin.display(description="Idle")
    def idle(self, obj):
        """Since the user's last keyboard or mouse input in an open console, or how long
        nobody has been connected."""
        from datetime import timedelta

        from django.utils import timezone
        from django.utils.timesince import timesince

        if obj.state != DesktopState.RUNNING or obj.user_id is None:
            return "-"
        last_input = obj.live_console_input_at
        if last_input is not None:
            if timezone.now() - last_input < timedelta(minutes=1):
                return "active"
            return timesince(last_input)
        since = obj.last_console_closed_at or obj.assigned_at or obj.state_changed_at
        return f"disconnected {timesince(since)}"

    @admin.action(description="Log off the selected sessions (farms: ends every program in them)",
                  permissions=["change"])
    def log_off_sessions(self, request, queryset):
        from .services.farm_sessions import log_off_session

        sessions = queryset.filter(pool__kind=Pool.Kind.FARM).exclude(state=DesktopState.DELETED)
        for session in sessions.select_related("pool", "host"):
            log_off_session(session=session, actor=request.user, reason=f"logged off by {request.user}")
        self.message_user(request, f"Logging off {sessions.count()} session(s); their consoles closed.")

    @admin.action(description="Send a message to the users of the selected desktops (shown in their console)",
                  permissions=["change"])
    def send_message(self, request, queryset):
        from django.template.response import TemplateResponse

        from .services.console_messages import MessageRefused, send_console_message

        text = (request.POST.get("message") or "").strip()
        if "apply" in request.POST and text:
            desktops = list(queryset.exclude(state=DesktopState.DELETED))
            try:
                for desktop in desktops:
                    send_console_message(desktop=desktop, text=text, actor=request.user)
            except MessageRefused as refused:
                self.message_user(request, str(refused), messages.ERROR)
                return None
            self.message_user(request, f"Message sent to the consoles of {len(desktops)} desktop(s).")
            return None
        return TemplateResponse(request, "admin/broker/desktop/send_message.html", {
            **self.admin_site.each_context(request), "title": "Send a message", "desktops": queryset,
            "opts": self.model._meta, "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })

    def has_add_permission(self, request):
        return False  # desktops are made by launching or by the pool, not by hand

    def has_delete_permission(self, request, obj=None):
        return False  # the row is history; the action below removes domain and disk

    @admin.action(description="Delete the selected desktops (power off, remove domain and disk)",
                  permissions=["change"])
    def delete_desktops_on_host(self, request, queryset):
        from .services.removal import request_desktop_deletion

        # The API's service: a farm session (maybe not placed yet) is logged off instead.
        count = sum(request_desktop_deletion(desktop=desktop, actor=request.user)
                    for desktop in queryset.select_related("pool", "host").exclude(state=DesktopState.DELETED))
        self.message_user(request, f"Deleting {count} desktop(s); watch their state here.", messages.INFO)

    @admin.action(description="Reset the selected desktops (floating: wipe and replace; dedicated: power off)",
                  permissions=["change"])
    def reset_desktops(self, request, queryset):
        from .services.desktop_sessions import end_desktop_session

        for desktop in queryset.select_related("pool").exclude(state=DesktopState.DELETED):
            end_desktop_session(desktop=desktop, actor=request.user, reason="reset by an admin")
        self.message_user(request, "Reset requested; consoles of these desktops were closed.")


class RestoreTargetForm(forms.Form):
    to_desktop = forms.ModelChoiceField(
        queryset=Desktop.objects.none(), label="Restore to",
        help_text="A dedicated desktop with a data disk. Its data disk is replaced by the backup's copy.")
    force = forms.BooleanField(required=False, label="Even if a console is open (closes it; unsaved work is lost)")


@admin.register(DataDiskBackup)
class DataDiskBackupAdmin(admin.ModelAdmin):
    list_display = ["created_at", "desktop", "kind", "state", "size", "taken_live", "duration", "host"]
    list_select_related = ["desktop", "host"]
    list_filter = ["state", "kind", "desktop__pool", "host"]
    search_fields = ["desktop__name", "desktop__user__username", "volume_name"]
    date_hierarchy = "created_at"
    readonly_fields = ["desktop", "host", "storage_pool", "volume_name", "path", "size_bytes", "capacity_bytes",
                       "state", "kind", "taken_live", "error", "requested_by", "created_at", "finished_at"]
    fields = readonly_fields
    actions = ["restore_to_its_desktop", "restore_to_another_desktop"]

    def has_add_permission(self, request):
        return False  # "Back up now" on the desktop takes one

    @admin.display(description="Size")
    def size(self, obj):
        return _size(obj.size_bytes)

    @admin.display(description="Took")
    def duration(self, obj):
        return "-" if obj.duration_s is None else f"{obj.duration_s:.1f} s"

    def _restore(self, request, queryset, *, to_other: bool):
        from django.template.response import TemplateResponse

        from .services.backups import RestoreRefused, request_restore

        chosen = list(queryset.select_related("desktop__host", "desktop__pool", "host"))
        form = RestoreTargetForm(request.POST if "apply" in request.POST else None)
        form.fields["to_desktop"].queryset = (Desktop.objects.filter(pool__kind=Pool.Kind.DEDICATED)
                                              .exclude(data_volume_name="").exclude(state=DesktopState.DELETED)
                                              .select_related("user", "pool"))
        if not to_other:
            form.fields["to_desktop"].required = False
        if len(chosen) != 1 and to_other:
            self.message_user(request, "Choose one backup to restore to another desktop.", messages.WARNING)
            return None
        if "apply" in request.POST and form.is_valid():
            restoring = 0
            for backup in chosen:
                target = form.cleaned_data["to_desktop"] if to_other else None
                try:
                    request_restore(backup=backup, actor=request.user, to_desktop=target,
                                    force=form.cleaned_data["force"])
                    restoring += 1
                except RestoreRefused as refused:
                    self.message_user(request, str(refused), messages.WARNING)
            if restoring:
                self.message_user(request, f"Restoring {restoring} backup(s): each desktop powers off, gets the "
                                           "backup's data disk and starts again if it was running; see its events.")
            return None
        return TemplateResponse(request, "admin/broker/datadiskbackup/confirm_restore.html", {
            **self.admin_site.each_context(request), "title": "Restore a data disk backup", "backups": chosen,
            "form": form, "to_other": to_other, "opts": self.model._meta,
            "action": "restore_to_another_desktop" if to_other else "restore_to_its_desktop",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })

    @admin.action(description="Restore this backup to its desktop (powers it off, replaces its data disk)",
                  permissions=["change"])
    def restore_to_its_desktop(self, request, queryset):
        return self._restore(request, queryset, to_other=False)

    @admin.action(description="Restore this backup to another desktop (replaces that desktop's data disk)",
                  permissions=["change"])
    def restore_to_another_desktop(self, request, queryset):
        return self._restore(request, queryset, to_other=True)


@admin.register(BrokerEvent)
class BrokerEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "host", "pool", "message"]
    list_filter = ["kind", "host", "pool"]
    search_fields = ["message"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DesktopEvent)
class DesktopEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "desktop", "from_state", "to_state", "message", "actor"]
    list_filter = ["to_state"]
    search_fields = ["desktop__name", "message"]
    readonly_fields = ["desktop", "from_state", "to_state", "message", "actor", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ConsoleSession)
class ConsoleSessionAdmin(admin.ModelAdmin):
    # Who, what, when and why it closed; the rest (codes, bytes, last seen) on its page.
    list_display = ["opened_at", "user", "desktop", "protocol", "client_address", "closed_at", "close_reason"]
    list_filter = ["protocol", "closed_at"]
    search_fields = ["user__username", "desktop__name"]
    readonly_fields = ["user", "desktop", "protocol", "client_address", "opened_at", "last_seen_at", "closed_at",
                       "close_code", "close_reason", "bytes_to_client", "bytes_to_desktop"]

    def has_add_permission(self, request):
        return False


@admin.register(LiveMigration)
class LiveMigrationAdmin(admin.ModelAdmin):
    """What moved where, how far a move has got (the page refreshes itself while one runs), and
    why a move failed."""

    list_display = ["created_at", "desktop", "source", "destination", "state", "progress", "took", "reason",
                    "requested_by"]
    list_filter = ["state", "reason", "source", "destination"]
    search_fields = ["desktop__name"]
    list_select_related = ["desktop", "source", "destination", "requested_by"]
    readonly_fields = [field.name for field in LiveMigration._meta.fields]

    class Media:
        js = ["broker/admin/refresh-while-moving.js"]

    @admin.display(description="Progress")
    def progress(self, obj):
        from django.utils.html import format_html

        if obj.state == LiveMigration.State.FAILED:
            return obj.error[:160]
        percent = obj.percent_done
        moving = not obj.is_finished
        label = "waiting" if obj.state == LiveMigration.State.QUEUED else (
            f"{percent} %" if percent is not None else "starting")
        if obj.data_total_bytes and not moving:
            label = f"{obj.data_total_bytes / 2**20:.0f} MiB copied"
        return format_html('<span{}>{}</span>', " data-moving" if moving else "", label)

    @admin.display(description="Took")
    def took(self, obj):
        return f"{obj.duration_s:.1f} s" if obj.duration_s is not None else "-"

    def has_add_permission(self, request):
        return False  # moves start from a drain or the desktops' action

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


from . import admin_jobs  # noqa: E402,F401  (long actions: broker/admin_jobs.py)
