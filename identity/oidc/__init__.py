"""OpenID Connect single sign-on: mozilla-django-oidc runs the authorization code flow with
PKCE; this package discovers the provider, maps its subject and groups onto accounts by the
directory's rules, and handles provider logouts (RP-initiated and back-channel)."""
