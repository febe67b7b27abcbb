"""Logging out with the provider.

- RP-initiated: the portal's logout sends the browser to the provider's end_session_endpoint
  with the ID token as id_token_hint and the login page as post_logout_redirect_uri.
- Back-channel (OpenID Connect Back-Channel Logout 1.0): the provider POSTs a logout token,
  a JWT checked here against the provider's keys: iss, aud, iat, exp, a jti not seen before,
  the back-channel logout event, a sid and/or sub, and no nonce. The portal sessions it names
  end, and their consoles close (as a logout or a password change closes them).
"""

import logging
import time
from datetime import datetime, timedelta, timezone as dt_timezone
from importlib import import_module
from urllib.parse import urlencode

import jwt
from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from broker.console import control as console_control
from broker.console.close_codes import CloseCode

from ..models import AuditEvent, OidcLoginSession, OidcLogoutToken
from ..services import audit
from . import discovery
from .tokens import CLOCK_SKEW_SECONDS, decode_provider_token

log = logging.getLogger(__name__)
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A logout token issued longer ago than this is refused even if it has not expired.
MAX_TOKEN_AGE_SECONDS = 600


class LogoutTokenRefused(Exception):
    pass


def provider_logout_url(request) -> str:
    """Where the browser goes to end the provider session too, or "" (not an SSO session, or
    the provider has no end_session_endpoint, or cannot be reached: the portal logout alone)."""
    if not getattr(settings, "OIDC_ENABLED", False):
        return ""
    id_token = request.session.get("oidc_id_token")
    if not id_token:
        return ""
    try:
        endpoint = discovery.provider_metadata().end_session_endpoint
    except discovery.ProviderUnavailable:
        return ""
    if not endpoint:
        return ""
    query = urlencode({
        "id_token_hint": id_token,
        "client_id": settings.OIDC_RP_CLIENT_ID,
        "post_logout_redirect_uri": request.build_absolute_uri(reverse("portal:login")),
    })
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def remember_login_session(*, request, issuer: str, subject: str, sid: str) -> None:
    # Stored now, under its final key: a logout token that arrives before the response ends
    # then finds the row to delete (identity/session_store.py stores a new login's at the end).
    request.session.save()
    session_key = request.session.session_key
    # Rows of sessions that expired on their own since (no logout told us) go.
    OidcLoginSession.objects.filter(
        created_at__lt=timezone.now() - timedelta(seconds=settings.SESSION_COOKIE_AGE)).delete()
    OidcLoginSession.objects.update_or_create(
        session_key=session_key,
        defaults={"user": request.user, "issuer": issuer, "subject": subject, "sid": sid or ""},
    )


def forget_login_session(session_key: str | None) -> None:
    if session_key:
        OidcLoginSession.objects.filter(session_key=session_key).delete()


_jwks_clients: dict[str, jwt.PyJWKClient] = {}


def _signing_key(token: str, jwks_uri: str):
    client = _jwks_clients.get(jwks_uri)
    if client is None:
        client = _jwks_clients[jwks_uri] = jwt.PyJWKClient(jwks_uri, cache_keys=True, lifespan=300,
                                                            timeout=int(settings.OIDC_TIMEOUT) or 5)
    try:
        return client.get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError:
        raise discovery.ProviderUnavailable(f"{jwks_uri} did not answer") from None
    except jwt.PyJWKClientError:
        raise LogoutTokenRefused("it names no signing key of the provider") from None
    except jwt.PyJWTError:
        raise LogoutTokenRefused("it is not a signed token") from None


def verify_logout_token(token: str) -> dict:
    if not token:
        raise LogoutTokenRefused("no logout_token")
    metadata = discovery.provider_metadata()
    try:
        algorithm = jwt.get_unverified_header(token).get("alg", "")
    except jwt.PyJWTError:
        raise LogoutTokenRefused("it is not a signed token") from None
    if algorithm not in metadata.signing_algorithms or algorithm == "none" or algorithm.startswith("HS"):
        raise LogoutTokenRefused(f"it is signed with {algorithm!r}, which this provider does not use")
    key = _signing_key(token, metadata.jwks_uri)
    claims = decode_provider_token(token, key, algorithm=algorithm, issuer=metadata.issuer,
                                   require=["iss", "aud", "iat", "exp", "jti", "events"], refusal=LogoutTokenRefused,
                                   what="it", whose="its")
    if time.time() - float(claims["iat"]) > MAX_TOKEN_AGE_SECONDS + CLOCK_SKEW_SECONDS:
        raise LogoutTokenRefused("it was issued too long ago")
    events = claims["events"]
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise LogoutTokenRefused("it carries no back-channel logout event")
    if "nonce" in claims:
        raise LogoutTokenRefused("it carries a nonce (an ID token, not a logout token?)")
    if not claims.get("sid") and not claims.get("sub"):
        raise LogoutTokenRefused("it names neither a session (sid) nor a user (sub)")
    return claims


def _mark_used(claims: dict) -> None:
    now = timezone.now()
    OidcLogoutToken.objects.filter(expires_at__lt=now).delete()
    expires_at = datetime.fromtimestamp(float(claims["exp"]), tz=dt_timezone.utc) + timedelta(seconds=CLOCK_SKEW_SECONDS)
    try:
        with transaction.atomic():
            OidcLogoutToken.objects.create(issuer=claims["iss"], jti=str(claims["jti"])[:255], expires_at=expires_at)
    except IntegrityError:
        raise LogoutTokenRefused("it was used already (jti)") from None


def end_portal_session(*, login: OidcLoginSession, reason: str) -> None:
    """End one portal login session and close its consoles (wherever they are served)."""
    engine = import_module(settings.SESSION_ENGINE)
    engine.SessionStore(session_key=login.session_key).delete()
    console_control.close_consoles(group=console_control.login_session_group(login.session_key),
                                   code=CloseCode.NOT_LOGGED_IN, reason=reason)
    login.delete()


def apply_logout_token(token: str) -> int:
    """Verify a back-channel logout token and end the sessions it names; return how many."""
    claims = verify_logout_token(token)
    _mark_used(claims)
    logins = OidcLoginSession.objects.filter(issuer=claims["iss"]).select_related("user")
    if claims.get("sid"):
        logins = logins.filter(sid=claims["sid"])
    if claims.get("sub"):
        logins = logins.filter(subject=claims["sub"])
    reason = f"You signed out at {settings.VDI_OIDC_PROVIDER_NAME}. Log in again."
    ended = 0
    for login in logins:
        end_portal_session(login=login, reason=reason)
        audit.record_event(kind=AuditEvent.Kind.SSO_LOGOUT, actor=login.user,
                           message=f"back-channel logout from {settings.VDI_OIDC_PROVIDER_NAME}")
        ended += 1
    log.info("back-channel logout: %s portal session(s) ended", ended)
    return ended
