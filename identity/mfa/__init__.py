"""Multi-factor login: a second step after the password (TOTP codes, passkeys, recovery codes),
enrolment from the portal's account page, and the policy (staff always; pools that require it).

django-otp keeps the devices and marks a session verified (request.user.is_verified());
passkeys are identity.PasskeyDevice over py_webauthn (passkeys.py)."""
