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
        queryset = getattr(view, "queryset", None)
        if queryset is None:  # the router's index of links (no rows): for those who hold some API role
            return request.method in SAFE_METHODS and (
                user.is_staff or scoping.is_operator(user) or scoping.is_auditor(user))
        model = queryset.model
        if request.method in SAFE_METHODS:
            return scoping.may_read(user, model)
        return scoping.may_write(user, model, view.required_model_permission())
