"""Authentication backends: the throttle in front, then the directory (django-auth-ldap).

AUTHENTICATION_BACKENDS (config/settings.py): LoginThrottleBackend, DirectoryBackend when LDAP
is configured, then Django's ModelBackend for local accounts.
"""

import logging

import ldap
from django.core.exceptions import PermissionDenied
from django_auth_ldap.backend import LDAPBackend

from . import refusals
from .directory import DirectoryGroupEntry, describe, normalize_dn
from .http import client_address_of
from .services import accounts, throttling

log = logging.getLogger(__name__)


class LoginThrottleBackend:
    """Refuses a login for a locked-out account or address before any password is checked (so a
    locked account costs the directory nothing). PermissionDenied stops Django's authenticate()
    from asking the backends after this one."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not username:
            return None
        lockout = throttling.active_lockout(username=username, address=client_address_of(request))
        if lockout is None:
            return None
        refusals.refuse(request, refusals.locked(lockout))
        raise PermissionDenied("login locked out")

    # No get_user(): this backend never logs anyone in, and without it Django's test client and
    # tools that look for "the first backend that can load users" skip it.


class DirectoryBackend(LDAPBackend):
    """django-auth-ldap, plus: local accounts are never asked of (or taken over by) the directory;
    the user's directory groups are mirrored at each login, by the rules the sync uses; a
    directory that does not answer is told apart from a wrong password; inactive users' sessions
    end (django-auth-ldap would keep them)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not username or not password:
            return None
        if accounts.is_local_account(username):
            return None  # ModelBackend's: no directory round trip, and no takeover by a namesake
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            return None  # wrong password, unknown user, or a directory error (receivers.py flags it)
        return self.finish_directory_login(request, user)

    def finish_directory_login(self, request, user):
        """After the directory found `user` (a password login, or a single sign-on matched to
        the directory): mirror their directory groups and apply the sync's activity rule.
        Returns the user, or None with the reason left on the request."""
        ldap_user = user.ldap_user
        try:
            group_type = self.settings.GROUP_TYPE
            infos = group_type.user_groups(ldap_user, self.settings.GROUP_SEARCH)
            groups = []
            for dn, attrs in infos:
                name = group_type.group_name_from_info((dn, attrs))
                if name:
                    groups.append(DirectoryGroupEntry(dn=normalize_dn(dn), name=name.strip()[:150]))
        except ldap.LDAPError as exc:
            # Without the groups the memberships cannot be trusted: no login, and nothing removed.
            log.warning("directory error reading the groups of %s: %s", user.get_username(), describe(exc))
            refusals.refuse(request, refusals.directory_unavailable())
            return None
        self._update_directory_attributes(user, ldap_user)
        refusal = accounts.record_directory_login(user=user, dn=normalize_dn(ldap_user.dn), groups=groups)
        if refusal == refusals.NOT_ENTITLED:
            refusals.refuse(request, refusals.not_entitled())
            return None
        if refusal is not None or not user.is_active:
            refusals.refuse(request, refusals.inactive())
            return None
        return user

    def _update_directory_attributes(self, user, ldap_user):
        """The directory's values of AUTH_LDAP_USER_ATTR_MAP (names, e-mail), written only when
        they changed: django-auth-ldap's AUTH_LDAP_ALWAYS_UPDATE_USER (off, config/ldap.py) would
        rewrite the whole user row at every login. A new user got them when it was made."""
        values = {}
        for field, attr in self.settings.USER_ATTR_MAP.items():
            try:
                values[field] = ldap_user.attrs[attr][0]
            except (TypeError, LookupError):
                continue
        changed = {name: value for name, value in accounts.fitted_user_fields(values).items()
                   if getattr(user, name) != value}
        if changed:
            for name, value in changed.items():
                setattr(user, name, value)
            user.save(update_fields=list(changed))

    def get_or_build_user(self, username, ldap_user):
        user, built = super().get_or_build_user(username, ldap_user)
        if not built and accounts.is_local_user(user):
            log.warning("directory entry %s matches the local account %s; not logging in as it",
                        ldap_user.dn, user.get_username())
            raise ldap_user.AuthenticationFailed("a local account has this name")
        return user, built

    def get_user(self, user_id):
        user = super().get_user(user_id)
        # A deactivated directory user's open login sessions end at their next request.
        return user if user is not None and user.is_active else None
