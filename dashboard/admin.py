"""The admin looks like the product: its own titles, an index that leads with the dashboard,
and no navigation sidebar eating a laptop screen's width (the lists need it)."""

from django.contrib import admin

from .models import TaskFailure

admin.site.site_header = "VDI broker administration"
admin.site.site_title = "VDI broker admin"
admin.site.index_title = "Overview"
admin.site.index_template = "admin/vdi_index.html"
admin.site.enable_nav_sidebar = False


@admin.register(TaskFailure)
class TaskFailureAdmin(admin.ModelAdmin):
    list_display = ["failed_at", "task_name", "error"]
    list_filter = ["task_name"]
    search_fields = ["task_name", "error"]
    readonly_fields = ["failed_at", "task_name", "task_id", "error"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
