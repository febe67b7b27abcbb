from django.urls import path

from identity.oidc.views import PortalLogoutView
from identity.views import PortalLoginView

from . import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    # Directory (LDAP) or local account; says "locked out" and "directory unavailable" (identity/).
    path("login/", PortalLoginView.as_view(), name="login"),
    # Also ends the identity provider's session for a single sign-on login (identity/oidc).
    path("logout/", PortalLogoutView.as_view(), name="logout"),
    path("pools/<int:pool_id>/launch/", views.launch, name="launch"),
    path("desktops/<int:desktop_id>/", views.desktop_page, name="desktop"),
    path("desktops/<int:desktop_id>/status/", views.desktop_status, name="desktop-status"),
    path("desktops/<int:desktop_id>/console-ticket/", views.console_ticket, name="console-ticket"),
    path("desktops/<int:desktop_id>/end/", views.end_session, name="end-session"),
    path("desktops/<int:desktop_id>/files/", views.files_page, name="files"),
    path("desktops/<int:desktop_id>/files/restore/<int:backup_id>/", views.restore_files, name="restore"),
]
