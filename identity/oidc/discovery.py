"""The provider's metadata from its /.well-known/openid-configuration, fetched when first
needed and kept a few minutes. A provider that does not answer raises ProviderUnavailable,
which the login page turns into a note beside the password form (break-glass accounts)."""

import logging
import threading
import time
from dataclasses import dataclass

import requests
from django.conf import settings

log = logging.getLogger(__name__)
RETRY_FAILED_AFTER = 15.0


class ProviderUnavailable(Exception):
    pass


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    signing_algorithms: tuple[str, ...]
    backchannel_logout_supported: bool


_lock = threading.Lock()
_cached: tuple[float, ProviderMetadata | None, str] | None = None  # (until, metadata, error)


def _fetch() -> ProviderMetadata:
    issuer = settings.VDI_OIDC_ISSUER
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"{url}: {exc.__class__.__name__}") from None
    # OpenID Connect Discovery 1.0, 4.3: the issuer in the document must be the one configured.
    if str(document.get("issuer", "")).rstrip("/") != issuer:
        raise ProviderUnavailable(f"{url} names the issuer {document.get('issuer')!r}, not {issuer!r}")
    try:
        return ProviderMetadata(
            issuer=document["issuer"],
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            userinfo_endpoint=document["userinfo_endpoint"],
            jwks_uri=document["jwks_uri"],
            end_session_endpoint=document.get("end_session_endpoint", ""),
            signing_algorithms=tuple(document.get("id_token_signing_alg_values_supported") or ["RS256"]),
            backchannel_logout_supported=bool(document.get("backchannel_logout_supported")),
        )
    except KeyError as exc:
        raise ProviderUnavailable(f"{url} lacks {exc.args[0]}") from None


def provider_metadata() -> ProviderMetadata:
    """The metadata, from the cache when fresh; raises ProviderUnavailable (also cached, 15 s,
    so a provider that is down does not make every login page wait for its timeout)."""
    global _cached
    now = time.monotonic()
    cached = _cached
    if cached is not None and cached[0] > now:
        if cached[1] is None:
            raise ProviderUnavailable(cached[2])
        return cached[1]
    with _lock:
        try:
            metadata = _fetch()
        except ProviderUnavailable as exc:
            log.warning("OpenID Connect discovery failed: %s", exc)
            _cached = (time.monotonic() + RETRY_FAILED_AFTER, None, str(exc))
            raise
        _cached = (time.monotonic() + settings.VDI_OIDC_DISCOVERY_CACHE_SECONDS, metadata, "")
        return metadata


def forget_metadata() -> None:
    global _cached
    _cached = None
