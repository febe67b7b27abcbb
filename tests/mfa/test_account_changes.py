"""Adding and removing factors from the account page: a current factor is asked again to remove
one, a password alone changes nothing on an account that has factors, every change is audited,
and an admin can reset a user who lost their phone."""

from django.core.management import call_command
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from identity.models import AuditEvent, LoginFailure, PasskeyDevice
from tests.mfa.pages import fresh_totp
from tests.support.mfa import verified_session

Kind = AuditEvent.Kind


def test_removing_a_device_asks_for_a_current_code(client, django_user_model):
    user = django_user_model.objects.create_user("ruth", password="ruth-Pass-1")
    device = verified_session(client, user)
    client.post(reverse("mfa:recovery-codes"))
    assert StaticDevice.objects.filter(user=user).exists()

    refused = client.post(reverse("mfa:remove-device"), {"device": device.persistent_id, "code": "000000x"},
                          follow=True)
    assert "Not removed" in refused.content.decode()
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    assert LoginFailure.objects.filter(username="ruth").count() == 1  # counted like a wrong password

    client.post(reverse("mfa:remove-device"), {"device": device.persistent_id, "code": fresh_totp(device)})
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()
    # Recovery codes stand in for a factor; with no factor left they go too.
    assert not StaticDevice.objects.filter(user=user).exists()
    kinds = set(AuditEvent.objects.filter(username="ruth").values_list("kind", flat=True))
    assert {Kind.MFA_ENROLLED, Kind.MFA_REMOVED, Kind.MFA_FAILED} <= kinds


def test_another_users_device_cannot_be_removed(client, django_user_model):
    mine = django_user_model.objects.create_user("sam", password="sam-Pass-1")
    theirs = TOTPDevice.objects.create(user=django_user_model.objects.create_user("tom"), name="x", confirmed=True)
    device = verified_session(client, mine)

    client.post(reverse("mfa:remove-device"), {"device": theirs.persistent_id, "code": fresh_totp(device)})

    assert TOTPDevice.objects.filter(pk=theirs.pk).exists()


def test_a_password_only_session_changes_nothing_on_an_account_with_factors(client, django_user_model):
    user = django_user_model.objects.create_user("uma", password="uma-Pass-1")
    TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client.force_login(user)  # e.g. a session from before the phone was added

    for name in ("mfa:authenticator", "mfa:recovery-codes", "mfa:passkey-add"):
        response = client.post(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("mfa:verify")), name
    assert client.post(reverse("mfa:passkey-options")).status_code == 403
    assert TOTPDevice.objects.filter(user=user).count() == 1
    assert not StaticDevice.objects.filter(user=user).exists()


def test_recovery_codes_need_a_factor_first(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("vic", password="vic-Pass-1"))

    response = client.post(reverse("mfa:recovery-codes"), follow=True)

    assert "Add an authenticator app or a passkey first" in response.content.decode()
    assert not StaticDevice.objects.exists()


def test_an_admin_resets_the_factors_of_a_user_who_lost_their_phone(django_user_model, admin_client):
    user = django_user_model.objects.create_user("wes", password="wes-Pass-1")
    phone = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    PasskeyDevice.objects.create(user=user, name="key", confirmed=True, credential_id="abc", public_key=b"k")
    assert admin_client.get(reverse("admin:identity_passkeydevice_changelist")).status_code == 200
    assert "wes" in admin_client.get(reverse("admin:otp_totp_totpdevice_changelist")).content.decode()
    page = admin_client.get(reverse("admin:otp_totp_totpdevice_change", args=[phone.pk])).content.decode()
    assert phone.key not in page and "otpauth" not in page and "qrcode" not in page  # the admin never shows keys

    call_command("reset_mfa", "wes")

    assert not TOTPDevice.objects.filter(user=user).exists() and not PasskeyDevice.objects.filter(user=user).exists()
    event = AuditEvent.objects.get(username="wes", kind=Kind.MFA_REMOVED)
    assert event.message == "manage.py reset_mfa"
