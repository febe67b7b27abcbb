from django.contrib import admin

from .models import OperatorScope


@admin.register(OperatorScope)
class OperatorScopeAdmin(admin.ModelAdmin):
    list_display = ["__str__", "pool_names", "note", "created_at"]
    list_select_related = ["user", "group"]
    autocomplete_fields = ["user", "group"]
    filter_horizontal = ["pools"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("pools")

    @admin.display(description="Pools")
    def pool_names(self, obj):
        return ", ".join(pool.name for pool in obj.pools.all())
