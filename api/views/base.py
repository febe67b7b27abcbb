from rest_framework import mixins, viewsets
from rest_framework.permissions import SAFE_METHODS

from .. import scoping


class ScopedViewSet(viewsets.GenericViewSet):
    """Rows narrowed to the caller's role (api/scoping.py): what they may read, or for a write,
    what they may change. A row outside is a 404, the same as a row that does not exist."""

    # Action name -> the model permission the admin asks for it; other writes: "change".
    write_permissions: dict[str, str] = {}
    # The plain rows a write acts on (without the list's counting annotations); None: queryset.
    action_queryset = None

    def required_model_permission(self) -> str:
        return self.write_permissions.get(self.action, "change")

    def get_queryset(self):
        user = self.request.user
        if self.request.method in SAFE_METHODS:
            return scoping.visible(user, super().get_queryset())
        queryset = self.action_queryset.all() if self.action_queryset is not None else super().get_queryset()
        return scoping.actionable(user, queryset, self.required_model_permission())


class ReadOnlyScopedViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    pass
