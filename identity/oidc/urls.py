from django.urls import path

from . import views

app_name = "oidc"

urlpatterns = [
    path("sign-in/", views.SignInView.as_view(), name="sign-in"),
    path("callback/", views.CallbackView.as_view(), name="callback"),
    path("backchannel-logout/", views.BackchannelLogoutView.as_view(), name="backchannel-logout"),
]
