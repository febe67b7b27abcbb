"""WebAuthn ceremonies with py_webauthn: registration (enrolment) and assertion (the second
step, and removing a device). The only module that imports webauthn.

Each ceremony's challenge lives in the session, is used once, and expires with the step."""

import json
import time

from django.conf import settings
from django.utils import timezone
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ..models import PasskeyDevice

_CHALLENGE = "mfa_passkey_challenge"
_CEREMONY_SECONDS = 300


class PasskeyRefused(Exception):
    """The browser's answer did not prove the passkey (wrong challenge, origin, key or signature)."""


def relying_party_id(request) -> str:
    return settings.VDI_WEBAUTHN_RP_ID or request.get_host().rsplit(":", 1)[0].strip("[]")


def expected_origin(request) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _remember_challenge(request, purpose: str, challenge: bytes) -> None:
    request.session[_CHALLENGE] = {"purpose": purpose, "challenge": bytes_to_base64url(challenge),
                                   "at": time.time()}


def _take_challenge(request, purpose: str) -> bytes:
    stored = request.session.pop(_CHALLENGE, None)
    if not stored or stored.get("purpose") != purpose or time.time() - stored.get("at", 0) > _CEREMONY_SECONDS:
        raise PasskeyRefused("The passkey request expired; try again.")
    return base64url_to_bytes(stored["challenge"])


def _descriptors(user) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=base64url_to_bytes(device.credential_id))
            for device in PasskeyDevice.objects.filter(user=user, confirmed=True)]


def registration_options(request, user) -> str:
    """navigator.credentials.create() options (JSON) for a new passkey of `user`."""
    options = generate_registration_options(
        rp_id=relying_party_id(request),
        rp_name=settings.VDI_MFA_ISSUER,
        user_id=str(user.pk).encode(),
        user_name=user.get_username(),
        user_display_name=user.get_full_name() or user.get_username(),
        exclude_credentials=_descriptors(user),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
    )
    _remember_challenge(request, "register", options.challenge)
    return options_to_json(options)


def register(request, user, *, response: str, name: str) -> PasskeyDevice:
    """Check the browser's answer to registration_options and keep the new credential."""
    challenge = _take_challenge(request, "register")
    try:
        verified = verify_registration_response(
            credential=response, expected_challenge=challenge, expected_rp_id=relying_party_id(request),
            expected_origin=expected_origin(request),
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyRefused(f"The passkey could not be registered: {exc}") from None
    credential_id = bytes_to_base64url(verified.credential_id)
    if PasskeyDevice.objects.filter(credential_id=credential_id).exists():
        raise PasskeyRefused("This passkey is registered already.")
    try:
        transports = json.loads(response).get("response", {}).get("transports") or []
    except (ValueError, AttributeError):
        transports = []
    return PasskeyDevice.objects.create(
        user=user, name=(name or "Passkey").strip()[:64] or "Passkey", confirmed=True,
        credential_id=credential_id, public_key=verified.credential_public_key,
        sign_count=verified.sign_count, transports=[str(t) for t in transports][:8],
    )


def authentication_options(request, user) -> str:
    """navigator.credentials.get() options (JSON) limited to `user`'s passkeys."""
    options = generate_authentication_options(
        rp_id=relying_party_id(request), allow_credentials=_descriptors(user),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    _remember_challenge(request, "authenticate", options.challenge)
    return options_to_json(options)


def authenticate(request, user, *, response: str) -> PasskeyDevice:
    """The passkey of `user` that signed the challenge; PasskeyRefused otherwise."""
    challenge = _take_challenge(request, "authenticate")
    try:
        credential_id = str(json.loads(response)["id"])
    except (ValueError, KeyError, TypeError):
        raise PasskeyRefused("The browser's passkey answer was not readable.") from None
    device = PasskeyDevice.objects.filter(user=user, confirmed=True, credential_id=credential_id).first()
    if device is None:
        raise PasskeyRefused("This passkey is not registered for your account.")
    try:
        verified = verify_authentication_response(
            credential=response, expected_challenge=challenge, expected_rp_id=relying_party_id(request),
            expected_origin=expected_origin(request), credential_public_key=bytes(device.public_key),
            credential_current_sign_count=device.sign_count,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyRefused(f"The passkey did not prove itself: {exc}") from None
    # A counter that does not move forward (when the key keeps one) means a cloned key: refused above.
    PasskeyDevice.objects.filter(pk=device.pk).update(sign_count=verified.new_sign_count,
                                                      last_used_at=timezone.now())
    return device
