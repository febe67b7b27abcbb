"""What the broker keeps of OpenID Connect logins: who a provider's subject is, which portal
login sessions it opened (so a back-channel logout can end them), and logout tokens seen."""

from django.conf import settings
from django.db import models


class OidcIdentity(models.Model):
    """A provider's stable subject (iss + sub) linked to one Django user: later logins find the
    user by it, never by an e-mail address."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="one_user_per_oidc_subject")]

    def __str__(self):
        return f"{self.subject} at {self.issuer}"


class OidcLoginSession(models.Model):
    """A portal login session opened through the provider, with the provider session (sid) it
    belongs to. Rows go when the portal session ends or the provider logs it out."""

    session_key = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    sid = models.CharField(max_length=255, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["issuer", "subject"], name="oidc_session_by_subject")]


class OidcLogoutToken(models.Model):
    """A back-channel logout token already acted on (its jti), so a replay is refused."""

    issuer = models.CharField(max_length=255)
    jti = models.CharField(max_length=255)
    expires_at = models.DateTimeField(db_index=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "jti"], name="one_use_per_logout_token")]
