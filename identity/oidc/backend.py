"""mozilla-django-oidc's backend, made to follow the discovered provider and to check the ID
token fully: signature against the provider's keys, iss, aud (and azp), exp, iat, nonce; the
userinfo answer must be about the same subject. The account it opens: identity.oidc.accounts.

Endpoints are looked up when a callback arrives, not when the backend is built: Django builds
every backend for each password login too, and a provider that is down must not stop those.
"""

import logging

import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from . import accounts, discovery
from .tokens import decode_provider_token

log = logging.getLogger(__name__)


class SsoRefusal(SuspiciousOperation):
    """The ID token or the login was refused; its text is safe to show (never a token)."""


class OidcBackend(OIDCAuthenticationBackend):
    def __init__(self, *args, **kwargs):
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.OIDC_RP_SIGN_ALGO = "RS256"  # asymmetric: keys from the provider's JWKS, never the secret
        self.metadata: discovery.ProviderMetadata | None = None

    def use_provider(self, metadata: discovery.ProviderMetadata) -> None:
        self.metadata = metadata
        self.OIDC_OP_TOKEN_ENDPOINT = metadata.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = metadata.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = metadata.jwks_uri

    def authenticate(self, request, **kwargs):
        # Only the callback of the code flow passes a nonce; password logins pass through.
        if request is None or "nonce" not in kwargs or "code" not in request.GET:
            return None
        self.use_provider(discovery.provider_metadata())
        return super().authenticate(request, **kwargs)

    def _algorithm_of(self, token) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SsoRefusal("the ID token is not a signed token") from None
        algorithm = header.get("alg", "")
        if algorithm not in self.metadata.signing_algorithms or algorithm == "none" or algorithm.startswith("HS"):
            raise SsoRefusal(f"the ID token is signed with {algorithm!r}, which this provider does not use")
        return algorithm

    def _verify_jws(self, payload, key):
        algorithm = self._algorithm_of(payload)
        claims = decode_provider_token(payload, key, algorithm=algorithm, issuer=self.metadata.issuer,
                                       require=["iss", "sub", "aud", "exp", "iat"], refusal=SsoRefusal,
                                       what="the ID token", whose="the ID token's")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SsoRefusal("the ID token was issued to another application")
        return claims

    def retrieve_matching_jwk(self, token):
        try:
            return super().retrieve_matching_jwk(token)
        except (KeyError, jwt.PyJWTError, SuspiciousOperation):
            raise SsoRefusal("the ID token names no signing key of the provider") from None

    def verify_token(self, token, **kwargs):
        if not token:
            raise SsoRefusal("the provider sent no ID token")
        self._algorithm_of(token)  # before its key is looked for
        try:
            return super().verify_token(token, **kwargs)
        except SsoRefusal:
            raise
        except SuspiciousOperation:  # mozilla-django-oidc's nonce check
            raise SsoRefusal("the ID token does not answer this sign-in (nonce)") from None

    def get_userinfo(self, access_token, id_token, payload):
        userinfo = super().get_userinfo(access_token, id_token, payload)
        # OpenID Connect Core 5.3.2: the userinfo must be about the ID token's subject.
        if userinfo.get("sub") != payload["sub"]:
            raise SsoRefusal("the provider's user information is about someone else")
        return {**payload, **userinfo}

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        # For the audit log of a refusal: who the provider said this was.
        self.request.sso_username = str(claims.get(settings.VDI_OIDC_USERNAME_CLAIM) or "")[:150]
        try:
            user = accounts.user_for_provider_login(request=self.request, issuer=payload["iss"],
                                                    subject=payload["sub"], claims=claims)
        except accounts.SsoRefused as refused:
            # mozilla-django-oidc turns this into "no user"; the callback view shows the reason.
            self.request.sso_refusal = refused.message
            raise SsoRefusal(refused.message) from None
        # Kept for the back-channel logout: which provider session this portal session is part of.
        self.request.oidc_login = {"issuer": payload["iss"], "subject": payload["sub"], "sid": payload.get("sid", "")}
        return user

    def get_user(self, user_id):
        user = super().get_user(user_id)
        # A user deactivated (by an admin, or by losing every entitlement) is logged out.
        return user if user is not None and user.is_active else None
