"""A real OpenID Connect provider for the tests: panva's oidc-provider (tests/support/oidc_provider,
installed by scripts/install-deps.sh --test) under Node, on a loopback port, as its own process.

The test holds the provider's signing key (it writes the provider's configuration), so it can
also make tokens the provider could have made (expired, for another client) and forged ones.
Accounts and their groups live in a JSON file that the provider reads at every lookup: a test
changes a person's groups between two logins with `set_account()`.
"""

import json
import os
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from urllib.request import urlopen

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.stack import ROOT, free_port

PROVIDER_DIR = ROOT / "tests" / "support" / "oidc_provider"
PORTAL_CLIENT_ID = "vdi-portal"
OTHER_CLIENT_ID = "other-app"


def node() -> str:
    found = shutil.which("node")
    if not found:
        raise RuntimeError("node is not installed: scripts/install-deps.sh installs it")
    return found


class OidcProvider:
    def __init__(self, workdir: Path, portal_url: str, port: int | None = None, log_file: Path | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.portal_url = portal_url
        self.client_secret = secrets.token_urlsafe(24)
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:16]
        self.accounts_file = workdir / "accounts.json"
        self.config_file = workdir / "provider.json"
        self.log_file = log_file or workdir / "provider.log"
        self.process: subprocess.Popen | None = None
        self.accounts: dict = {}

    # -- accounts -------------------------------------------------------------------------

    def set_account(self, sub: str, *, username: str, groups: list[str], email: str = "", name: str = "") -> None:
        """Add or change an account; the provider reads the file again at its next lookup."""
        self.accounts[sub] = {"claims": {
            "preferred_username": username, "groups": groups, "email": email or f"{username}@example.test",
            "email_verified": True, "name": name or username.title(), "given_name": name or username.title(),
        }}
        temporary = self.accounts_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.accounts))
        os.replace(temporary, self.accounts_file)

    # -- the process ----------------------------------------------------------------------

    def portal_env(self) -> dict:
        """What the portal needs to use this provider (the README's variables)."""
        return {
            "VDI_OIDC_ISSUER": self.issuer,
            "VDI_OIDC_CLIENT_ID": PORTAL_CLIENT_ID,
            "VDI_OIDC_CLIENT_SECRET": self.client_secret,
            "VDI_OIDC_SCOPES": "openid profile email groups",
            "VDI_OIDC_PROVIDER_NAME": "Test IdP",
            "VDI_OIDC_TIMEOUT_SECONDS": "3",
            # The provider is stopped and started again by tests: look it up again soon.
            "VDI_OIDC_DISCOVERY_CACHE_SECONDS": "2",
        }

    def _config(self) -> dict:
        private_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key))
        private_jwk.pop("key_ops", None)  # PyJWT says ["sign"]; the provider verifies its ID token hints with it too
        private_jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        portal = self.portal_url.rstrip("/")
        return {
            "issuer": self.issuer,
            "port": self.port,
            "accounts_file": str(self.accounts_file),
            "cookie_key": secrets.token_urlsafe(32),
            "signing_keys": [private_jwk],
            "clients": [
                {
                    "client_id": PORTAL_CLIENT_ID,
                    "client_secret": self.client_secret,
                    "client_name": "VDI portal",
                    "redirect_uris": [f"{portal}/oidc/callback/"],
                    "post_logout_redirect_uris": [f"{portal}/login/"],
                    "backchannel_logout_uri": f"{portal}/oidc/backchannel-logout/",
                    "backchannel_logout_session_required": True,
                    "token_endpoint_auth_method": "client_secret_post",
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                },
                {
                    "client_id": OTHER_CLIENT_ID,
                    "client_secret": secrets.token_urlsafe(24),
                    "redirect_uris": [f"{portal}/oidc/callback/"],
                    "token_endpoint_auth_method": "client_secret_post",
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                },
            ],
        }

    def start(self) -> "OidcProvider":
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError("oidc-provider is not installed: run scripts/install-deps.sh --test")
        if not self.accounts_file.exists():
            self.accounts_file.write_text("{}")
        self.config_file.write_text(json.dumps(self._config()))
        log = open(self.log_file, "a")
        self.process = subprocess.Popen([node(), str(PROVIDER_DIR / "provider.mjs"), str(self.config_file)],
                                        cwd=PROVIDER_DIR, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {self.log_file.read_text()[-2000:]}")
            try:
                urlopen(f"{self.issuer}/.well-known/openid-configuration", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"oidc-provider did not answer in 30 s: {self.log_file.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    # -- tokens the test makes ------------------------------------------------------------

    def sign(self, claims: dict, *, key=None, kid: str | None = None, typ: str = "JWT") -> str:
        """A JWT signed with the provider's own key (or `key`, for a forgery)."""
        return jwt.encode(claims, key or self.private_key, algorithm="RS256",
                          headers={"kid": kid or self.kid, "typ": typ})

    def logout_token(self, *, sub: str = "", sid: str = "", aud: str = PORTAL_CLIENT_ID, **overrides) -> dict:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": aud, "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex,
                  "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}
        if sub:
            claims["sub"] = sub
        if sid:
            claims["sid"] = sid
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}
