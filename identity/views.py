from django.conf import settings
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect

from .forms import PortalLoginForm
from .mfa import factors, pending


class PortalLoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    form_class = PortalLoginForm
    redirect_authenticated_user = True

    def form_valid(self, form):
        user = form.get_user()
        if factors.has_second_factor(user):
            # The password was right; nobody is logged in until the second step (identity/mfa/).
            pending.begin(self.request, user, next_url=self.get_success_url())
            return redirect("mfa:verify")
        return super().form_valid(form)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        if settings.OIDC_ENABLED:
            from .oidc.views import single_sign_on_offer

            context["sso"] = single_sign_on_offer(next_url=context.get("next", ""))
        return context
