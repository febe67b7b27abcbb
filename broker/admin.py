from django.contrib import admin, messages
from django.db.models import Count, Q

from .models import (
    ConsoleSession,
    Desktop,
    DesktopEvent,
    DesktopState,
    Entitlement,
    GoldenImage,
    GoldenImageVersion,
    Host,
    Pool,
)
from .models.desktops import LIVE_STATES


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "libvirt_uri", "domain_type", "is_enabled", "live_desktops"]
    list_filter = ["is_enabled", "domain_type"]
    search_fields = ["name", "libvirt_uri"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _live=Count("desktops", filter=Q(desktops__state__in=LIVE_STATES))
        )

    @admin.display(description="Live desktops", ordering="_live")
    def live_desktops(self, obj):
        return obj._live


class GoldenImageVersionInline(admin.TabularInline):
    model = GoldenImageVersion
    extra = 0
    fields = ["number", "path", "size_bytes", "sha256", "is_published", "notes", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(GoldenImage)
class GoldenImageAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "current_version_number"]
    search_fields = ["name", "display_name"]
    inlines = [GoldenImageVersionInline]

    @admin.display(description="Current version")
    def current_version_number(self, obj):
        version = obj.current_version()
        return f"v{version.number}" if version else "none published"


class EntitlementInline(admin.TabularInline):
    model = Entitlement
    extra = 1
    autocomplete_fields = ["user", "group"]


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["display_name", "name", "kind", "image", "host", "protocol", "is_enabled", "desktop_counts"]
    list_filter = ["kind", "protocol", "is_enabled"]
    search_fields = ["name", "display_name"]
    inlines = [EntitlementInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _running=Count("desktops", filter=Q(desktops__state=DesktopState.RUNNING)),
            _live=Count("desktops", filter=Q(desktops__state__in=LIVE_STATES)),
            _failed=Count("desktops", filter=Q(desktops__state=DesktopState.FAILED)),
        )

    @admin.display(description="Desktops (running / live / failed)")
    def desktop_counts(self, obj):
        return f"{obj._running} / {obj._live} / {obj._failed}"


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


@admin.register(Desktop)
class DesktopAdmin(admin.ModelAdmin):
    list_display = ["name", "pool", "user", "host", "state", "state_changed_at", "image_version"]
    list_filter = ["state", "pool", "host"]
    search_fields = ["name", "user__username"]
    readonly_fields = ["name", "uuid", "state", "state_changed_at", "last_error", "vnc_port", "spice_port",
                       "host", "image_version", "pool", "created_at"]
    fields = ["name", "pool", "user", "host", "image_version", "state", "state_changed_at", "last_error",
              "vnc_port", "spice_port", "uuid", "created_at"]
    inlines = [DesktopEventInline]
    actions = ["delete_desktops_on_host"]

    def has_add_permission(self, request):
        return False  # desktops are made by launching or by the pool, not by hand

    def has_delete_permission(self, request, obj=None):
        return False  # the row is history; the action below removes domain and disk

    @admin.action(description="Delete the selected desktops (power off, remove domain and disk)")
    def delete_desktops_on_host(self, request, queryset):
        from django.db import transaction

        from .tasks import delete_desktop_task

        count = 0
        for desktop in queryset.exclude(state=DesktopState.DELETED):
            if desktop.state == DesktopState.DELETING or desktop.transition(
                DesktopState.DELETING, message="deletion requested by admin", actor=request.user
            ):
                transaction.on_commit(lambda pk=desktop.pk: delete_desktop_task.delay(pk))
                count += 1
        self.message_user(request, f"Deleting {count} desktop(s); watch their state here.", messages.INFO)


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
    list_display = ["opened_at", "user", "desktop", "protocol", "client_address", "closed_at", "close_code",
                    "close_reason", "bytes_to_client"]
    list_filter = ["protocol", "closed_at"]
    search_fields = ["user__username", "desktop__name"]
    readonly_fields = ["user", "desktop", "protocol", "client_address", "opened_at", "closed_at", "close_code",
                       "close_reason", "bytes_to_client", "bytes_to_desktop"]

    def has_add_permission(self, request):
        return False
