"""Directory (LDAP) accounts take the same second step as local ones, against a real slapd."""

from django.contrib.auth import get_user_model
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from identity.models import AuditEvent
from tests.identity.conftest import company, directory, ldap_env, login, use_ldap  # noqa: F401
from tests.mfa.pages import fresh_totp

User = get_user_model()


def test_a_directory_user_with_an_authenticator_app_needs_its_code(client, use_ldap, company):  # noqa: F811
    login(client, "alice")  # the first login creates the account from the directory
    alice = User.objects.get(username="alice")
    client.post(reverse("portal:logout"))
    device = TOTPDevice.objects.create(user=alice, name="phone", confirmed=True)

    step = login(client, "alice")
    assert step.status_code == 302 and step["Location"] == reverse("mfa:verify")
    assert "_auth_user_id" not in client.session  # the directory said yes; nobody is logged in yet
    assert client.get(reverse("portal:home")).status_code == 302

    wrong = client.post(reverse("mfa:verify"), {"code": "12345x"})
    assert wrong.status_code == 400 and "_auth_user_id" not in client.session
    done = client.post(reverse("mfa:verify"), {"code": fresh_totp(device)})
    assert done.status_code == 302 and done["Location"] == reverse("portal:home")
    assert client.session["_auth_user_id"] == str(alice.pk)
    assert client.session["_auth_user_backend"] == "identity.backends.DirectoryBackend"
    assert b"Engineering desktop" in client.get(reverse("portal:home")).content
    assert AuditEvent.objects.filter(username="alice", kind=AuditEvent.Kind.MFA_FAILED).count() == 1


def test_the_second_step_expires(client, use_ldap, company, settings):  # noqa: F811
    login(client, "alice")
    alice = User.objects.get(username="alice")
    client.post(reverse("portal:logout"))
    device = TOTPDevice.objects.create(user=alice, name="phone", confirmed=True)
    login(client, "alice")
    settings.VDI_MFA_STEP_SECONDS = 0

    late = client.post(reverse("mfa:verify"), {"code": fresh_totp(device)}, follow=True)

    assert "_auth_user_id" not in client.session
    assert late.redirect_chain[-1][0] == reverse("portal:login")
