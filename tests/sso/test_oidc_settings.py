"""VDI_OIDC_* variables to settings (config/oidc.py), as production reads them."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.oidc import oidc_settings_from_env

BASE = {"VDI_OIDC_ISSUER": "https://idp.example.com/realms/staff/", "VDI_OIDC_CLIENT_ID": "vdi"}


def test_it_is_off_without_an_issuer():
    assert oidc_settings_from_env({}) == {"OIDC_ENABLED": False}


def test_it_reads_the_variables_with_their_defaults():
    values = oidc_settings_from_env({**BASE, "VDI_OIDC_CLIENT_SECRET": "s3cret"})
    assert values["OIDC_ENABLED"] is True
    assert values["VDI_OIDC_ISSUER"] == "https://idp.example.com/realms/staff"
    assert values["OIDC_RP_CLIENT_SECRET"] == "s3cret"
    assert values["OIDC_RP_SCOPES"] == "openid profile email groups"
    assert values["VDI_OIDC_USERNAME_CLAIM"] == "preferred_username"
    assert values["VDI_OIDC_GROUPS_CLAIM"] == "groups"
    assert values["VDI_OIDC_DIRECTORY_CLAIM"] == "preferred_username"
    assert values["OIDC_USE_PKCE"] is True and values["OIDC_USE_NONCE"] is True


def test_it_always_asks_for_the_openid_scope():
    assert oidc_settings_from_env({**BASE, "VDI_OIDC_SCOPES": "profile roles"})["OIDC_RP_SCOPES"] == "openid profile roles"


def test_it_reads_the_secret_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    assert oidc_settings_from_env({**BASE, "VDI_OIDC_CLIENT_SECRET_FILE": str(secret)})["OIDC_RP_CLIENT_SECRET"] == \
        "from-a-file"


@pytest.mark.parametrize(("env", "message"), [
    ({"VDI_OIDC_ISSUER": "https://idp.example.com"}, "VDI_OIDC_CLIENT_ID"),
    ({**BASE, "VDI_OIDC_CLIENT_SECRET": "a", "VDI_OIDC_CLIENT_SECRET_FILE": "/b"}, "not both"),
    ({**BASE, "VDI_OIDC_CLIENT_SECRET_FILE": "/nonexistent/secret"}, "No such file"),
    ({**BASE, "VDI_OIDC_USERNAME_CLAIM": "email"}, "the user can change"),
    ({**BASE, "VDI_OIDC_DIRECTORY_CLAIM": "email"}, "the user can change"),
    ({**BASE, "VDI_OIDC_TIMEOUT_SECONDS": "soon"}, "number of seconds"),
])
def test_it_refuses_a_bad_configuration(env, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        oidc_settings_from_env(env)
