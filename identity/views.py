from django.conf import settings
from django.contrib.auth import views as auth_views

from .forms import PortalLoginForm


class PortalLoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    form_class = PortalLoginForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        if settings.OIDC_ENABLED:
            from .oidc.views import single_sign_on_offer

            context["sso"] = single_sign_on_offer(next_url=context.get("next", ""))
        return context
