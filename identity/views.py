from django.contrib.auth import views as auth_views

from .forms import PortalLoginForm


class PortalLoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    form_class = PortalLoginForm
    redirect_authenticated_user = True
