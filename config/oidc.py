"""OpenID Connect single sign-on settings from the environment (identity/oidc).

SSO is on when VDI_OIDC_ISSUER is set. The provider's endpoints and keys are discovered from
its /.well-known/openid-configuration when first needed (identity/oidc/discovery.py), not
here: a provider that is down when the portal starts must not stop the portal, whose local
break-glass accounts still log in. mozilla-django-oidc runs the authorization code flow (with
PKCE and a nonce); its OIDC_* settings are set here from the VDI_OIDC_* variables.
`oidc_settings_from_env()` is a pure function so the tests build settings as production does.
"""

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

# Claims a person can change themselves: never used to find their account.
_MUTABLE_CLAIMS = {"email", "email_verified", "name", "given_name", "family_name", "nickname"}


def _client_secret(env: Mapping) -> str:
    inline, path = env.get("VDI_OIDC_CLIENT_SECRET", ""), env.get("VDI_OIDC_CLIENT_SECRET_FILE", "")
    if inline and path:
        raise ImproperlyConfigured("Set VDI_OIDC_CLIENT_SECRET or VDI_OIDC_CLIENT_SECRET_FILE, not both.")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().rstrip("\r\n")
        except OSError as exc:
            raise ImproperlyConfigured(f"VDI_OIDC_CLIENT_SECRET_FILE {path}: {exc.strerror}") from None
    return inline


def _seconds(env: Mapping, name: str, default: float) -> float:
    value = env.get(name, "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, not {value!r}") from None


def oidc_settings_from_env(env: Mapping) -> dict:
    issuer = env.get("VDI_OIDC_ISSUER", "").strip().rstrip("/")
    values = {"OIDC_ENABLED": bool(issuer)}
    if not issuer:
        return values
    client_id = env.get("VDI_OIDC_CLIENT_ID", "").strip()
    if not client_id:
        raise ImproperlyConfigured("VDI_OIDC_ISSUER is set: also set VDI_OIDC_CLIENT_ID.")
    scopes = env.get("VDI_OIDC_SCOPES", "").split() or ["openid", "profile", "email", "groups"]
    if "openid" not in scopes:
        scopes.insert(0, "openid")
    username_claim = env.get("VDI_OIDC_USERNAME_CLAIM", "").strip() or "preferred_username"
    # With LDAP on too: the claim whose value is the directory user name (the directory's user
    # search finds the entry by it). A stable identifier, never an e-mail address.
    directory_claim = env.get("VDI_OIDC_DIRECTORY_CLAIM", "").strip() or username_claim
    for name, claim in (("VDI_OIDC_USERNAME_CLAIM", username_claim), ("VDI_OIDC_DIRECTORY_CLAIM", directory_claim)):
        if claim in _MUTABLE_CLAIMS:
            raise ImproperlyConfigured(f"{name} {claim!r} is a value the user can change; use a stable claim "
                                       "(preferred_username, sub, or an employee id).")
    timeout = _seconds(env, "VDI_OIDC_TIMEOUT_SECONDS", 5.0)
    values.update({
        "VDI_OIDC_ISSUER": issuer,
        "VDI_OIDC_PROVIDER_NAME": env.get("VDI_OIDC_PROVIDER_NAME", "").strip() or "single sign-on",
        "VDI_OIDC_USERNAME_CLAIM": username_claim,
        "VDI_OIDC_GROUPS_CLAIM": env.get("VDI_OIDC_GROUPS_CLAIM", "").strip() or "groups",
        "VDI_OIDC_DIRECTORY_CLAIM": directory_claim,
        # Provider metadata is kept this long; a failed discovery is retried after 15 s.
        "VDI_OIDC_DISCOVERY_CACHE_SECONDS": _seconds(env, "VDI_OIDC_DISCOVERY_CACHE_SECONDS", 300.0),
        # mozilla-django-oidc's own settings.
        "OIDC_RP_CLIENT_ID": client_id,
        "OIDC_RP_CLIENT_SECRET": _client_secret(env),
        "OIDC_RP_SCOPES": " ".join(scopes),
        "OIDC_USE_PKCE": True,
        "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
        "OIDC_USE_NONCE": True,
        "OIDC_STORE_ID_TOKEN": True,  # the id_token_hint of the provider logout
        "OIDC_TIMEOUT": timeout,
        "OIDC_VERIFY_SSL": env.get("VDI_OIDC_CA_BUNDLE", "").strip() or True,
        "OIDC_CREATE_USER": True,
        "OIDC_AUTHENTICATION_CALLBACK_URL": "oidc:callback",
        "OIDC_CALLBACK_CLASS": "identity.oidc.views.CallbackView",
        "OIDC_AUTHENTICATE_CLASS": "identity.oidc.views.SignInView",
        "OIDC_OP_LOGOUT_URL_METHOD": "identity.oidc.logout.provider_logout_url",
        "LOGIN_REDIRECT_URL_FAILURE": "portal:login",
    })
    return values


_values = oidc_settings_from_env(os.environ)
globals().update(_values)
__all__ = sorted(_values)
