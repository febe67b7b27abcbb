"""Login throttling: failures in a sliding window lead to short lockouts, per account and per address.

Kept in the database so every portal process sees the same counts. A lockout is short (never
for good), an account's lockout does not apply at addresses where the account logged in
recently (so an attacker elsewhere cannot keep its owner out), and an admin can clear any.
That exemption is bounded: once an account has failed VDI_LOGIN_MAX_FAILURES_AT_KNOWN_ADDRESS
times within the window from one of its known addresses (someone behind the owner's own NAT or
proxy guessing), its lockout applies there too.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import AuditEvent, KnownLoginAddress, LoginFailure, LoginLockout
from . import audit

Scope = LoginLockout.Scope


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures_per_account: int
    max_failures_per_address: int
    window: timedelta
    lockout: timedelta
    known_address_for: timedelta
    max_failures_at_known_address: int

    @classmethod
    def from_settings(cls) -> "ThrottlePolicy":
        return cls(
            max_failures_per_account=settings.VDI_LOGIN_MAX_FAILURES_PER_ACCOUNT,
            max_failures_per_address=settings.VDI_LOGIN_MAX_FAILURES_PER_ADDRESS,
            window=timedelta(seconds=settings.VDI_LOGIN_FAILURE_WINDOW_SECONDS),
            lockout=timedelta(seconds=settings.VDI_LOGIN_LOCKOUT_SECONDS),
            known_address_for=timedelta(days=settings.VDI_LOGIN_KNOWN_ADDRESS_DAYS),
            max_failures_at_known_address=settings.VDI_LOGIN_MAX_FAILURES_AT_KNOWN_ADDRESS,
        )


def account_key(username: str) -> str:
    # Lower-cased: "Alice" and "alice" are one account to the directory, so one counter.
    return (username or "").strip().lower()[:150]


def active_lockout(*, username: str, address: str | None) -> LoginLockout | None:
    """The lockout that refuses this login now, if any (the one that lasts longest)."""
    now = timezone.now()
    key = account_key(username)
    scopes = Q(scope=Scope.ACCOUNT, key=key)
    if address:
        scopes |= Q(scope=Scope.ADDRESS, key=address)
    candidates = LoginLockout.objects.filter(scopes, cleared_at__isnull=True, locked_until__gt=now).order_by(
        "-locked_until"
    )
    for lockout in candidates:
        if (lockout.scope == Scope.ACCOUNT and address and _is_known_address(key, address, now)
                and not _guessed_at_known_address(key, address, now)):
            continue
        return lockout
    return None


def _is_known_address(key: str, address: str, now) -> bool:
    horizon = now - ThrottlePolicy.from_settings().known_address_for
    return KnownLoginAddress.objects.filter(username=key, client_address=address, last_success_at__gte=horizon).exists()


def _guessed_at_known_address(key: str, address: str, now) -> bool:
    """Too many failures of this account from this known address, within the window."""
    policy = ThrottlePolicy.from_settings()
    failures = LoginFailure.objects.filter(username=key, client_address=address, created_at__gt=now - policy.window)
    return failures.count() >= policy.max_failures_at_known_address


def record_failed_login(*, username: str, address: str | None) -> list[LoginLockout]:
    """Count a failed login; return the lockouts it caused (none, or one per scope)."""
    policy = ThrottlePolicy.from_settings()
    now = timezone.now()
    key = account_key(username)
    LoginFailure.objects.create(username=key, client_address=address)
    # Old failures count for nothing any more; keep the table small.
    LoginFailure.objects.filter(created_at__lt=now - max(policy.window, timedelta(days=1))).delete()
    new = []
    limits = [(Scope.ACCOUNT, key, Q(username=key), policy.max_failures_per_account)]
    if address:
        limits.append((Scope.ADDRESS, address, Q(client_address=address), policy.max_failures_per_address))
    for scope, lock_key, failures_of, limit in limits:
        if not lock_key or limit <= 0:
            continue
        since = now - policy.window
        last = LoginLockout.objects.filter(scope=scope, key=lock_key).order_by("-locked_at").first()
        if last is not None:
            if last.cleared_at is None and last.locked_until > now:
                continue  # already locked
            # Failures before the last lockout were paid for by it.
            since = max(since, last.locked_at)
        failures = LoginFailure.objects.filter(failures_of, created_at__gt=since).count()
        if failures >= limit:
            new.append(LoginLockout.objects.create(scope=scope, key=lock_key, failures=failures,
                                                   locked_until=now + policy.lockout))
    return new


def record_successful_login(*, username: str, address: str | None) -> None:
    key = account_key(username)
    with transaction.atomic():  # one transaction for both (each would take its own)
        LoginFailure.objects.filter(username=key).delete()
        if address:
            # One upsert (INSERT ... ON CONFLICT DO UPDATE), not a read, a savepoint and a write.
            KnownLoginAddress.objects.bulk_create(
                [KnownLoginAddress(username=key, client_address=address, last_success_at=timezone.now())],
                update_conflicts=True, unique_fields=["username", "client_address"],
                update_fields=["last_success_at"])


def clear_lockout(*, lockout: LoginLockout, actor, request=None) -> bool:
    """End a lockout now; its failures do not count towards the next one."""
    cleared = LoginLockout.objects.filter(pk=lockout.pk, cleared_at__isnull=True).update(
        cleared_at=timezone.now(), cleared_by=actor
    )
    if cleared:
        audit.record_event(kind=AuditEvent.Kind.LOCKOUT_CLEARED, request=request, actor=actor,
                           target=f"{lockout.get_scope_display().lower()} {lockout.key}",
                           message=f"lockout until {lockout.locked_until:%Y-%m-%d %H:%M} UTC cleared")
    return bool(cleared)
