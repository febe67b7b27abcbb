"""Identity settings from the environment: the LDAP directory (django-auth-ldap) and login throttling.

LDAP is on when AUTH_LDAP_SERVER_URI is set; otherwise only local Django accounts log in. The
variables carry django-auth-ldap's setting names where one exists (AUTH_LDAP_*), and VDI_* names
for this project's own knobs. `ldap_settings_from_env()` is a pure function so the tests build
their settings the same way production does.
"""

import os
import re
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

# AUTH_LDAP_GROUP_TYPE value (case-insensitive) -> (django_auth_ldap.config class, default group filter)
GROUP_TYPES = {
    "groupofnames": ("GroupOfNamesType", "(objectClass=groupOfNames)"),
    "nestedgroupofnames": ("NestedGroupOfNamesType", "(objectClass=groupOfNames)"),
    "groupofuniquenames": ("GroupOfUniqueNamesType", "(objectClass=groupOfUniqueNames)"),
    "nestedgroupofuniquenames": ("NestedGroupOfUniqueNamesType", "(objectClass=groupOfUniqueNames)"),
    "posixgroup": ("PosixGroupType", "(objectClass=posixGroup)"),
    "activedirectory": ("ActiveDirectoryGroupType", "(objectClass=group)"),
    "nestedactivedirectory": ("NestedActiveDirectoryGroupType", "(objectClass=group)"),
}
DEFAULT_USER_ATTR_MAP = "first_name=givenName,last_name=sn,email=mail"
_TRUE = {"1", "true", "yes", "on"}


def _flag(env: Mapping, name: str, default: bool = False) -> bool:
    value = env.get(name)
    return default if value is None or not value.strip() else value.strip().lower() in _TRUE


def _number(env: Mapping, name: str, default, kind=int):
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def _bind_password(env: Mapping) -> str:
    inline, path = env.get("AUTH_LDAP_BIND_PASSWORD"), env.get("AUTH_LDAP_BIND_PASSWORD_FILE")
    if inline and path:
        raise ImproperlyConfigured("Set AUTH_LDAP_BIND_PASSWORD or AUTH_LDAP_BIND_PASSWORD_FILE, not both.")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                # A file written by `echo secret > file` ends with a newline that is not part of it.
                return handle.read().rstrip("\r\n")
        except OSError as exc:
            raise ImproperlyConfigured(f"AUTH_LDAP_BIND_PASSWORD_FILE {path}: {exc.strerror}") from None
    return inline or ""


def _attr_map(value: str) -> dict:
    mapping = {}
    for pair in filter(None, (item.strip() for item in value.split(","))):
        field, _, attr = pair.partition("=")
        if not field.strip() or not attr.strip():
            raise ImproperlyConfigured(f"AUTH_LDAP_USER_ATTR_MAP: {pair!r} is not field=attribute")
        mapping[field.strip()] = attr.strip()
    return mapping


def _throttle_settings(env: Mapping) -> dict:
    return {
        # Failed logins counted in a sliding window; reaching a limit locks the account (or the
        # client address) for a short while, never for good.
        "VDI_LOGIN_MAX_FAILURES_PER_ACCOUNT": _number(env, "VDI_LOGIN_MAX_FAILURES_PER_ACCOUNT", 5),
        "VDI_LOGIN_MAX_FAILURES_PER_ADDRESS": _number(env, "VDI_LOGIN_MAX_FAILURES_PER_ADDRESS", 20),
        "VDI_LOGIN_FAILURE_WINDOW_SECONDS": _number(env, "VDI_LOGIN_FAILURE_WINDOW_SECONDS", 900),
        "VDI_LOGIN_LOCKOUT_SECONDS": _number(env, "VDI_LOGIN_LOCKOUT_SECONDS", 900),
        # An account's lockout does not apply where it logged in successfully this recently, so an
        # attacker elsewhere cannot keep its owner out by failing on purpose.
        "VDI_LOGIN_KNOWN_ADDRESS_DAYS": _number(env, "VDI_LOGIN_KNOWN_ADDRESS_DAYS", 30),
        # ...but not for ever: this many failures of the account from one known address within the
        # window (someone behind the owner's own NAT guessing) and its lockout applies there too.
        "VDI_LOGIN_MAX_FAILURES_AT_KNOWN_ADDRESS": _number(env, "VDI_LOGIN_MAX_FAILURES_AT_KNOWN_ADDRESS", 10),
    }


def ldap_settings_from_env(env: Mapping) -> dict:
    """The settings for django-auth-ldap and the directory sync, from environment variables."""
    values = _throttle_settings(env)
    uri = env.get("AUTH_LDAP_SERVER_URI", "").strip()
    values["LDAP_ENABLED"] = bool(uri)
    values["VDI_LDAP_SYNC_INTERVAL_SECONDS"] = _number(env, "VDI_LDAP_SYNC_INTERVAL_SECONDS", 900)
    values["VDI_LDAP_SYNC_MAX_REMOVAL_PERCENT"] = _number(env, "VDI_LDAP_SYNC_MAX_REMOVAL_PERCENT", 20.0, float)
    values["VDI_LDAP_SYNC_ALWAYS_ALLOWED_REMOVALS"] = _number(env, "VDI_LDAP_SYNC_ALWAYS_ALLOWED_REMOVALS", 5)
    values["VDI_LDAP_SYNC_PAGE_SIZE"] = _number(env, "VDI_LDAP_SYNC_PAGE_SIZE", 500)
    if not uri:
        return values

    # Imported only when LDAP is on, so a host without python-ldap still runs with local accounts.
    import ldap
    from django_auth_ldap import config as ldap_config

    user_base = env.get("AUTH_LDAP_USER_SEARCH_BASE", "").strip()
    group_base = env.get("AUTH_LDAP_GROUP_SEARCH_BASE", "").strip()
    if not user_base or not group_base:
        raise ImproperlyConfigured(
            "AUTH_LDAP_SERVER_URI is set: also set AUTH_LDAP_USER_SEARCH_BASE and AUTH_LDAP_GROUP_SEARCH_BASE."
        )
    user_filter = env.get("AUTH_LDAP_USER_SEARCH_FILTER", "").strip() or "(uid=%(user)s)"
    if "%(user)s" not in user_filter:
        raise ImproperlyConfigured("AUTH_LDAP_USER_SEARCH_FILTER must contain %(user)s, e.g. (uid=%(user)s)")
    username_attr = env.get("VDI_LDAP_USERNAME_ATTR", "").strip()
    if not username_attr:
        match = re.search(r"\(([\w.-]+)=%\(user\)s\)", user_filter)
        if not match:
            raise ImproperlyConfigured(
                "Cannot tell the user name attribute from AUTH_LDAP_USER_SEARCH_FILTER; set VDI_LDAP_USERNAME_ATTR."
            )
        username_attr = match.group(1)

    type_name = env.get("AUTH_LDAP_GROUP_TYPE", "").strip() or "groupOfNames"
    key = type_name.lower().removesuffix("type")
    if key not in GROUP_TYPES:
        raise ImproperlyConfigured(
            f"AUTH_LDAP_GROUP_TYPE {type_name!r} is not one of: groupOfNames, nestedGroupOfNames, "
            "groupOfUniqueNames, nestedGroupOfUniqueNames, posixGroup, activeDirectory, nestedActiveDirectory"
        )
    class_name, default_group_filter = GROUP_TYPES[key]
    group_filter = env.get("AUTH_LDAP_GROUP_SEARCH_FILTER", "").strip() or default_group_filter
    name_attr = env.get("AUTH_LDAP_GROUP_NAME_ATTR", "").strip() or "cn"

    timeout = _number(env, "VDI_LDAP_TIMEOUT_SECONDS", 5.0, float)
    options = {
        # A directory that does not answer must fail fast: the login page waits on it.
        ldap.OPT_NETWORK_TIMEOUT: timeout,
        ldap.OPT_TIMEOUT: timeout * 2,
        # Active Directory answers with referrals that libldap would chase anonymously.
        ldap.OPT_REFERRALS: 0,
    }
    ca_file = env.get("AUTH_LDAP_CA_CERT_FILE", "").strip()
    if ca_file:
        options[ldap.OPT_X_TLS_CACERTFILE] = ca_file
        options[ldap.OPT_X_TLS_REQUIRE_CERT] = ldap.OPT_X_TLS_DEMAND
        # Per-connection TLS options take effect only in a new TLS context, made last.
        options[ldap.OPT_X_TLS_NEWCTX] = 0

    values.update({
        "AUTH_LDAP_SERVER_URI": uri,
        "AUTH_LDAP_BIND_DN": env.get("AUTH_LDAP_BIND_DN", "").strip(),
        "AUTH_LDAP_BIND_PASSWORD": _bind_password(env),
        "AUTH_LDAP_START_TLS": _flag(env, "AUTH_LDAP_START_TLS"),
        "AUTH_LDAP_CONNECTION_OPTIONS": options,
        "AUTH_LDAP_USER_SEARCH": ldap_config.LDAPSearch(user_base, ldap.SCOPE_SUBTREE, user_filter),
        "AUTH_LDAP_GROUP_SEARCH": ldap_config.LDAPSearch(group_base, ldap.SCOPE_SUBTREE, group_filter),
        "AUTH_LDAP_GROUP_TYPE": getattr(ldap_config, class_name)(name_attr=name_attr),
        "AUTH_LDAP_USER_ATTR_MAP": _attr_map(env.get("AUTH_LDAP_USER_ATTR_MAP", DEFAULT_USER_ATTR_MAP)),
        # A new user is filled in from the directory; an existing one gets only the values that
        # changed (identity.backends.DirectoryBackend), not a rewrite of the row at every login.
        "AUTH_LDAP_ALWAYS_UPDATE_USER": False,
        # Group memberships are mirrored by identity.backends (directory groups only, so local
        # groups keep their members), not by django-auth-ldap's AUTH_LDAP_MIRROR_GROUPS.
        "AUTH_LDAP_MIRROR_GROUPS": None,
        # No caching of groups: a revoked membership must count at the next login.
        "AUTH_LDAP_CACHE_TIMEOUT": 0,
        "VDI_LDAP_USERNAME_ATTR": username_attr,
    })
    return values


_values = ldap_settings_from_env(os.environ)
globals().update(_values)
__all__ = sorted(_values)
