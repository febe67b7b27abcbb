"""Single sign-on where the LDAP directory is configured too: the provider's login opens the
directory account named by VDI_OIDC_DIRECTORY_CLAIM (the same account a password login opens),
never one found by e-mail, and the directory, not the provider, says which groups it is in."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory

from identity.models import DirectoryAccount, OidcIdentity
from identity.oidc.accounts import SsoRefused, user_for_provider_login
from tests.identity.conftest import group_names, login

pytestmark = pytest.mark.django_db
User = get_user_model()
ISSUER = "https://idp.example.com"


@pytest.fixture
def use_sso(settings, use_ldap):
    from config.oidc import oidc_settings_from_env

    values = oidc_settings_from_env({"VDI_OIDC_ISSUER": ISSUER, "VDI_OIDC_CLIENT_ID": "vdi",
                                     "VDI_OIDC_PROVIDER_NAME": "Company IdP"})
    for name, value in values.items():
        setattr(settings, name, value)


def sso_login(sub: str, **claims):
    return user_for_provider_login(request=RequestFactory().get("/oidc/callback/"), issuer=ISSUER, subject=sub,
                                   claims={"sub": sub, **claims})


def test_it_opens_the_directory_account_a_password_login_opens(use_sso, company):
    assert login(Client(), "alice").status_code == 302
    alice = User.objects.get(username="alice")

    user = sso_login("sub-alice", preferred_username="alice", groups=["Marketing", "Finance"])

    assert user.pk == alice.pk
    assert DirectoryAccount.objects.filter(user=alice).exists()
    assert group_names(alice) == {"Engineering"}  # the directory's groups, not the provider's
    assert OidcIdentity.objects.get(issuer=ISSUER, subject="sub-alice").user_id == alice.pk


def test_it_never_finds_the_account_by_e_mail(use_sso, company):
    assert login(Client(), "alice").status_code == 302
    user = sso_login("sub-carol", preferred_username="carol", email="alice@example.com")
    assert user.get_username() == "carol"
    assert group_names(user) == {"Finance"}


def test_the_directory_claim_can_be_another_claim(use_sso, company, settings):
    settings.VDI_OIDC_DIRECTORY_CLAIM = "employee_login"
    user = sso_login("sub-bob", preferred_username="robert.baker", employee_login="bob")
    assert user.get_username() == "bob"
    assert group_names(user) == {"Engineering", "Finance"}


@pytest.mark.parametrize(("claims", "message"), [
    ({"preferred_username": "nobody"}, "The company directory has no account nobody."),
    ({"preferred_username": "erin"}, "Your account has no access to any desktop."),
    ({"email": "alice@example.com"}, "The identity provider sent no preferred_username"),
])
def test_it_refuses_who_the_directory_does_not_let_in(use_sso, company, claims, message):
    with pytest.raises(SsoRefused) as refused:
        sso_login("sub-x", **claims)
    assert refused.value.message.startswith(message)


def test_a_local_account_is_never_opened_by_single_sign_on(use_sso, company):
    User.objects.create_user("root", password="local-root-Pw-1", is_superuser=True, is_staff=True)
    with pytest.raises(SsoRefused, match="is a local account here"):
        sso_login("sub-root", preferred_username="root")


def test_a_directory_that_does_not_answer_is_said_so(use_sso, company, directory):
    directory.stop()
    with pytest.raises(SsoRefused, match="directory is unavailable"):
        sso_login("sub-alice", preferred_username="alice")
