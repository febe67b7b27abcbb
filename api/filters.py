"""Query filters of the list endpoints: ?pool=ID&host=ID&state=running&user=USERNAME ..."""

import django_filters as filters

from broker.models import (
    BrokerEvent,
    ConsoleSession,
    Desktop,
    DesktopEvent,
    DesktopState,
    Entitlement,
    GoldenImageVersion,
    Host,
    LiveMigration,
    Pool,
)


class PoolFilter(filters.FilterSet):
    class Meta:
        model = Pool
        fields = ["kind", "image", "host", "is_enabled"]


class HostFilter(filters.FilterSet):
    class Meta:
        model = Host
        fields = ["kind", "farm", "is_enabled", "in_maintenance", "is_online", "storage_group"]


class GoldenImageVersionFilter(filters.FilterSet):
    class Meta:
        model = GoldenImageVersion
        fields = ["image", "is_published"]


class DesktopFilter(filters.FilterSet):
    state = filters.MultipleChoiceFilter(choices=DesktopState.choices)
    user = filters.CharFilter(field_name="user__username", help_text="The user's name.")
    spare = filters.BooleanFilter(field_name="user", lookup_expr="isnull", help_text="Unassigned desktops.")

    class Meta:
        model = Desktop
        fields = ["pool", "host", "state", "user", "image_version", "application"]


class ConsoleSessionFilter(filters.FilterSet):
    pool = filters.NumberFilter(field_name="desktop__pool")
    user = filters.CharFilter(field_name="user__username")
    open = filters.BooleanFilter(field_name="closed_at", lookup_expr="isnull", help_text="Still open.")

    class Meta:
        model = ConsoleSession
        fields = ["desktop", "pool", "user", "protocol", "open"]


class EntitlementFilter(filters.FilterSet):
    user = filters.CharFilter(field_name="user__username")
    group = filters.CharFilter(field_name="group__name")

    class Meta:
        model = Entitlement
        fields = ["pool", "user", "group"]


class DesktopEventFilter(filters.FilterSet):
    pool = filters.NumberFilter(field_name="desktop__pool")
    state = filters.CharFilter(field_name="to_state", help_text="The state moved to.")

    class Meta:
        model = DesktopEvent
        fields = ["desktop", "pool", "state"]


class BrokerEventFilter(filters.FilterSet):
    class Meta:
        model = BrokerEvent
        fields = ["kind", "host", "pool"]


class LiveMigrationFilter(filters.FilterSet):
    pool = filters.NumberFilter(field_name="desktop__pool")

    class Meta:
        model = LiveMigration
        fields = ["desktop", "pool", "state", "source", "destination", "reason"]
