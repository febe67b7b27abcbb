from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(template_name="portal/login.html",
                                                 redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("pools/<int:pool_id>/launch/", views.launch, name="launch"),
    path("desktops/<int:desktop_id>/", views.desktop_page, name="desktop"),
    path("desktops/<int:desktop_id>/status/", views.desktop_status, name="desktop-status"),
    path("desktops/<int:desktop_id>/console-ticket/", views.console_ticket, name="console-ticket"),
]
