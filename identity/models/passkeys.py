from django.db import models
from django.utils import timezone
from django_otp.models import Device


class PasskeyDevice(Device):
    """A WebAuthn credential (a passkey or a security key) as a django-otp device, so a login
    verified with it is "verified" like one with a one-time code (request.user.is_verified()).
    The ceremonies themselves are py_webauthn's (identity/mfa/passkeys.py)."""

    credential_id = models.CharField(max_length=1400, unique=True)  # base64url, as the browser sends it
    public_key = models.BinaryField()  # COSE key
    sign_count = models.PositiveBigIntegerField(default=0)
    transports = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(Device.Meta):
        verbose_name = "passkey"

    def verify_token(self, token):
        return False  # a passkey answers a challenge (identity/mfa/passkeys.py), never a typed code
