"""config/ldap.py: the AUTH_LDAP_* environment variables become django-auth-ldap's settings."""

import ldap
import pytest
from django.core.exceptions import ImproperlyConfigured
from django_auth_ldap import config as ldap_config

from config.ldap import ldap_settings_from_env

BASE = {
    "AUTH_LDAP_SERVER_URI": "ldap://directory.example.com",
    "AUTH_LDAP_USER_SEARCH_BASE": "ou=people,dc=example,dc=com",
    "AUTH_LDAP_GROUP_SEARCH_BASE": "ou=groups,dc=example,dc=com",
}


def test_ldap_is_off_without_a_server_uri():
    values = ldap_settings_from_env({})

    assert values["LDAP_ENABLED"] is False
    assert not any(name.startswith("AUTH_LDAP_") for name in values)


def test_the_defaults_search_uid_and_group_of_names():
    values = ldap_settings_from_env(BASE)

    assert values["LDAP_ENABLED"] is True
    assert values["AUTH_LDAP_USER_SEARCH"].filterstr == "(uid=%(user)s)"
    assert values["VDI_LDAP_USERNAME_ATTR"] == "uid"
    assert isinstance(values["AUTH_LDAP_GROUP_TYPE"], ldap_config.GroupOfNamesType)
    assert values["AUTH_LDAP_GROUP_SEARCH"].filterstr == "(objectClass=groupOfNames)"
    assert values["AUTH_LDAP_USER_ATTR_MAP"] == {"first_name": "givenName", "last_name": "sn", "email": "mail"}
    assert values["AUTH_LDAP_START_TLS"] is False
    assert values["AUTH_LDAP_CONNECTION_OPTIONS"][ldap.OPT_NETWORK_TIMEOUT] == 5.0


@pytest.mark.parametrize("name, cls, group_filter", [
    ("groupOfNames", "GroupOfNamesType", "(objectClass=groupOfNames)"),
    ("nestedGroupOfNames", "NestedGroupOfNamesType", "(objectClass=groupOfNames)"),
    ("groupOfUniqueNames", "GroupOfUniqueNamesType", "(objectClass=groupOfUniqueNames)"),
    ("NestedGroupOfUniqueNamesType", "NestedGroupOfUniqueNamesType", "(objectClass=groupOfUniqueNames)"),
    ("posixGroup", "PosixGroupType", "(objectClass=posixGroup)"),
    ("activeDirectory", "ActiveDirectoryGroupType", "(objectClass=group)"),
    ("nestedActiveDirectory", "NestedActiveDirectoryGroupType", "(objectClass=group)"),
])
def test_every_group_type_is_understood(name, cls, group_filter):
    values = ldap_settings_from_env({**BASE, "AUTH_LDAP_GROUP_TYPE": name})

    assert type(values["AUTH_LDAP_GROUP_TYPE"]).__name__ == cls
    assert values["AUTH_LDAP_GROUP_SEARCH"].filterstr == group_filter


def test_active_directory_settings():
    values = ldap_settings_from_env({
        **BASE,
        "AUTH_LDAP_GROUP_TYPE": "nestedActiveDirectory",
        "AUTH_LDAP_USER_SEARCH_FILTER": "(&(objectClass=user)(sAMAccountName=%(user)s)"
                                        "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
    })

    assert values["VDI_LDAP_USERNAME_ATTR"] == "sAMAccountName"
    assert values["AUTH_LDAP_CONNECTION_OPTIONS"][ldap.OPT_REFERRALS] == 0


def test_the_bind_password_can_come_from_a_file(tmp_path):
    secret = tmp_path / "bind-password"
    secret.write_text("s3cret with spaces\n")

    values = ldap_settings_from_env({**BASE, "AUTH_LDAP_BIND_PASSWORD_FILE": str(secret)})

    assert values["AUTH_LDAP_BIND_PASSWORD"] == "s3cret with spaces"


@pytest.mark.parametrize("env, complaint", [
    ({"AUTH_LDAP_USER_SEARCH_BASE": ""}, "AUTH_LDAP_USER_SEARCH_BASE"),
    ({"AUTH_LDAP_GROUP_TYPE": "memberOf"}, "AUTH_LDAP_GROUP_TYPE"),
    ({"AUTH_LDAP_USER_SEARCH_FILTER": "(uid=alice)"}, "%(user)s"),
    ({"AUTH_LDAP_BIND_PASSWORD": "x", "AUTH_LDAP_BIND_PASSWORD_FILE": "/etc/x"}, "not both"),
    ({"AUTH_LDAP_BIND_PASSWORD_FILE": "/nonexistent/secret"}, "AUTH_LDAP_BIND_PASSWORD_FILE"),
    ({"VDI_LDAP_TIMEOUT_SECONDS": "soon"}, "VDI_LDAP_TIMEOUT_SECONDS"),
])
def test_a_misconfiguration_is_named(env, complaint):
    with pytest.raises(ImproperlyConfigured, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        ldap_settings_from_env({**BASE, **env})


def test_starttls_with_a_ca_file_demands_a_valid_certificate():
    values = ldap_settings_from_env({**BASE, "AUTH_LDAP_START_TLS": "on", "AUTH_LDAP_CA_CERT_FILE": "/etc/ca.pem"})

    options = values["AUTH_LDAP_CONNECTION_OPTIONS"]
    assert values["AUTH_LDAP_START_TLS"] is True
    assert options[ldap.OPT_X_TLS_CACERTFILE] == "/etc/ca.pem"
    assert options[ldap.OPT_X_TLS_REQUIRE_CERT] == ldap.OPT_X_TLS_DEMAND
    assert list(options)[-1] == ldap.OPT_X_TLS_NEWCTX  # last, or the options above are ignored
