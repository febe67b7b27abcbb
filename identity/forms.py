from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from . import refusals


class RefusalMessages:
    """Say why a login was refused (locked out, directory down, no access) instead of "wrong password"."""

    def clean(self):
        try:
            return super().clean()
        except ValidationError as error:
            refusal = refusals.refusal_of(self.request)
            if refusal is not None and getattr(error, "code", None) in {"invalid_login", "inactive"}:
                raise ValidationError(refusal.message, code=refusal.code) from None
            raise


class PortalLoginForm(RefusalMessages, AuthenticationForm):
    pass


class AdminLoginForm(RefusalMessages, AdminAuthenticationForm):
    pass
