"""A real OpenLDAP slapd per test, on a loopback port, with its own small company in it.

    people    alice (Engineering), bob (Engineering, Finance), carol (Finance),
              dave (Contractors, which is a member of Engineering), erin (Marketing),
              frank (no group), root (Engineering; same name as the local superuser)
    groups    ou=groups: groupOfNames; ou=posixgroups: posixGroup; ou=uniquegroups: groupOfUniqueNames

Engineering and Finance are entitled to a dedicated pool each; Marketing to nothing. The
broker's rows (host, image, pools) are plain database rows: these tests boot no VM.
"""

import pytest
from django.contrib.auth.models import Group

from tests.support.slapd import (
    SERVICE_DN,
    SUFFIX,
    Slapd,
    group_dn,
    group_of_names,
    person,
    user_dn,
)

PASSWORDS = {
    "alice": "alice-Pw-4471", "bob": "bob-Pw-2208", "carol": "carol-Pw-9913", "dave": "dave-Pw-5520",
    "erin": "erin-Pw-3318", "frank": "frank-Pw-7781", "root": "directory-root-Pw-1",
}
THROTTLE_BACKEND = "identity.backends.LoginThrottleBackend"
DIRECTORY_BACKEND = "identity.backends.DirectoryBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


def seed_ldif() -> str:
    people = (
        person("alice", PASSWORDS["alice"], given="Alice", surname="Archer", uid_number=1001, gid_number=5000)
        + person("bob", PASSWORDS["bob"], given="Bob", surname="Baker", uid_number=1002, gid_number=5001)
        + person("carol", PASSWORDS["carol"], given="Carol", surname="Cook")
        + person("dave", PASSWORDS["dave"], given="Dave", surname="Dyer")
        + person("erin", PASSWORDS["erin"], given="Erin", surname="Evans")
        + person("frank", PASSWORDS["frank"], given="Frank", surname="Fisher")
        + person("root", PASSWORDS["root"], given="Not", surname="Root")
    )
    groups = (
        group_of_names("Contractors", [user_dn("dave")])
        + group_of_names("Engineering", [user_dn("alice"), user_dn("bob"), group_dn("Contractors"), user_dn("root")])
        + group_of_names("Finance", [user_dn("bob"), user_dn("carol")])
        + group_of_names("Marketing", [user_dn("erin")])
    )
    posix = (
        f"dn: ou=posixgroups,{SUFFIX}\nobjectClass: organizationalUnit\nou: posixgroups\n\n"
        f"dn: cn=devs,ou=posixgroups,{SUFFIX}\nobjectClass: posixGroup\ncn: devs\ngidNumber: 5000\n"
        f"memberUid: carol\n\n"
        f"dn: cn=ops,ou=posixgroups,{SUFFIX}\nobjectClass: posixGroup\ncn: ops\ngidNumber: 5001\n\n"
    )
    unique = (
        f"dn: ou=uniquegroups,{SUFFIX}\nobjectClass: organizationalUnit\nou: uniquegroups\n\n"
        f"dn: cn=Designers,ou=uniquegroups,{SUFFIX}\nobjectClass: groupOfUniqueNames\ncn: Designers\n"
        f"uniqueMember: {user_dn('alice')}\nuniqueMember: {user_dn('carol')}\n\n"
    )
    return people + groups + posix + unique


@pytest.fixture(scope="session", autouse=True)
def _remove_test_domains_and_volumes():
    """These tests make no libvirt domain or volume. Overriding the suite-wide cleanup keeps a run
    of tests/identity alone from touching libvirtd, where another run's test VMs may be live."""
    yield


@pytest.fixture(autouse=True)
def fast_local_password_hashing(settings):
    """Local accounts' passwords are hashed with Django's default (slow on purpose) in production;
    here that would only slow the throttling tests down, where each failure hashes once."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def directory(tmp_path):
    server = Slapd(tmp_path / "slapd")
    server.start(seed_ldif())
    yield server
    server.stop()


@pytest.fixture
def ldap_env(directory):
    return {
        "AUTH_LDAP_SERVER_URI": directory.uri,
        "AUTH_LDAP_BIND_DN": SERVICE_DN,
        "AUTH_LDAP_BIND_PASSWORD": directory.service_password,
        "AUTH_LDAP_USER_SEARCH_BASE": f"ou=people,{SUFFIX}",
        "AUTH_LDAP_GROUP_SEARCH_BASE": f"ou=groups,{SUFFIX}",
        "AUTH_LDAP_GROUP_TYPE": "nestedGroupOfNames",
        "VDI_LDAP_TIMEOUT_SECONDS": "2",
    }


@pytest.fixture
def use_ldap(settings, ldap_env):
    """Turn LDAP on the way production does: settings built from environment variables by
    config/ldap.py. Call it again with overrides to change the environment."""
    from config.ldap import ldap_settings_from_env

    def configure(**overrides):
        env = {**ldap_env, **overrides}
        for name, value in ldap_settings_from_env(env).items():
            setattr(settings, name, value)
        settings.AUTHENTICATION_BACKENDS = [THROTTLE_BACKEND, DIRECTORY_BACKEND, MODEL_BACKEND]
        return env

    configure()
    return configure


@pytest.fixture
def company(db):
    """The broker side: two dedicated pools, entitled to the Engineering and Finance groups."""
    from broker.models import Entitlement, GoldenImage, GoldenImageVersion, Host, Pool

    host = Host.objects.create(name="local", libvirt_uri="test:///default", domain_type="qemu")
    image = GoldenImage.objects.create(name="linux", display_name="Linux")
    GoldenImageVersion.objects.create(image=image, number=1, path="/var/lib/vdi/images/linux-v1.qcow2")
    engineering, finance = Group.objects.create(name="Engineering"), Group.objects.create(name="Finance")
    eng_pool = Pool.objects.create(name="eng", display_name="Engineering desktop", image=image,
                                   kind=Pool.Kind.DEDICATED, revoked_desktop_grace_hours=48)
    fin_pool = Pool.objects.create(name="fin", display_name="Finance desktop", image=image, kind=Pool.Kind.DEDICATED)
    Entitlement.objects.create(pool=eng_pool, group=engineering)
    Entitlement.objects.create(pool=fin_pool, group=finance)
    return type("Company", (), {"host": host, "image": image, "eng_pool": eng_pool, "fin_pool": fin_pool,
                                "engineering": engineering, "finance": finance})


def login(client, username, password=None, **extra):
    from django.urls import reverse

    return client.post(reverse("portal:login"), {"username": username, "password": password or PASSWORDS[username]},
                       **extra)


def run_sync(**kwargs):
    from identity.models import DirectorySyncRun
    from identity.services import sync

    run = sync.queue_sync(trigger=DirectorySyncRun.Trigger.COMMAND, **kwargs)
    return sync.run_directory_sync(run_id=run.pk)


def group_names(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))
