from django.urls import path

from . import views

app_name = "mfa"

urlpatterns = [
    path("login/verify/", views.verify, name="verify"),
    path("login/verify/passkey/", views.passkey_challenge, name="passkey-challenge"),
    path("account/", views.account, name="account"),
    path("account/authenticator/", views.start_authenticator_app, name="authenticator"),
    path("account/authenticator/<int:device_id>/", views.confirm_authenticator_app, name="authenticator-confirm"),
    path("account/passkeys/options/", views.passkey_registration_options, name="passkey-options"),
    path("account/passkeys/", views.add_passkey, name="passkey-add"),
    path("account/recovery-codes/", views.recovery_codes, name="recovery-codes"),
    path("account/devices/remove/", views.remove_device, name="remove-device"),
]
