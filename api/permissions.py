from rest_framework.permissions import SAFE_METHODS, BasePermission

from . import scoping


class ApiRolePermission(BasePermission):
    """May this user read this resource, or run this write on it at all (api/scoping.py)? Which
    rows is the view's queryset's business: another pool's row is a 404."""

    message = "Your role does not allow this."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        model = view.queryset.model
        if request.method in SAFE_METHODS:
            return scoping.may_read(user, model)
        return scoping.may_write(user, model, view.required_model_permission())
