from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    """Who did what from where: logins, failures, launches, admin changes, directory changes."""

    class Kind(models.TextChoices):
        LOGIN = "login", "Login"
        LOGIN_FAILED = "login_failed", "Login failed"
        LOGIN_REFUSED = "login_refused", "Login refused"
        LOGOUT = "logout", "Logout"
        SSO_LOGIN_FAILED = "sso_failed", "Single sign-on refused"
        SSO_LOGOUT = "sso_logout", "Logged out by the identity provider"
        LOCKOUT = "lockout", "Lockout"
        LOCKOUT_CLEARED = "lockout_cleared", "Lockout cleared"
        LAUNCH = "launch", "Desktop launch"
        ADMIN_CHANGE = "admin_change", "Admin change"
        DIRECTORY_SYNC = "directory_sync", "Directory sync"
        ACCOUNT_DEACTIVATED = "account_off", "Account deactivated by the directory"
        ACCOUNT_REACTIVATED = "account_on", "Account reactivated by the directory"
        PREPROVISION = "preprovision", "Desktops pre-provisioned"
        MFA_ENROLLED = "mfa_enrolled", "Second factor added"
        MFA_REMOVED = "mfa_removed", "Second factor removed"
        MFA_VERIFIED = "mfa_verified", "Second factor verified"
        MFA_FAILED = "mfa_failed", "Second factor failed"
        RECOVERY_CODE_USED = "recovery_used", "Recovery code used"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="+")
    # Kept as text too: the user name typed at a failed login, or of a user deleted since.
    username = models.CharField(max_length=150, blank=True, db_index=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    target = models.CharField(max_length=255, blank=True)
    message = models.TextField(blank=True)
    # The admin's own history row this event copies (admin changes), so each is copied once.
    log_entry_id = models.PositiveBigIntegerField(null=True, blank=True, unique=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.get_kind_display()} {self.username}"
