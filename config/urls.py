from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/dashboard/", include("dashboard.urls")),  # before the admin's own app pages
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    # OpenID Connect single sign-on (identity/oidc), when VDI_OIDC_ISSUER is set.
    *([path("oidc/", include("identity.oidc.urls"))] if settings.OIDC_ENABLED else []),
    path("", include("api.health_urls")),
    path("", include("identity.mfa.urls")),  # the second login step and the account page
    path("", include("portal.urls")),
]

# The database away (restart, failover): a 503 page that says so, not a 500 (config/unavailable.py).
handler500 = "config.unavailable.server_error"
