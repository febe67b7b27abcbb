"""Neither the bind password nor a user's password is ever written to a log or a record."""

import logging

from identity.models import AuditEvent, DirectorySyncRun
from tests.identity.conftest import PASSWORDS, login, run_sync

WRONG_BIND_PASSWORD = "Wrong-Bind-Pw-8a7c"
WRONG_USER_PASSWORD = "Typo-Pw-91f3"


def test_passwords_never_reach_the_logs_or_the_records(client, use_ldap, company, directory, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # django_auth_ldap included: it logs binds and searches at DEBUG

    login(client, "alice")  # a good login
    client.logout()
    login(client, "alice", WRONG_USER_PASSWORD)
    run_sync()
    use_ldap(AUTH_LDAP_BIND_PASSWORD=WRONG_BIND_PASSWORD)  # a bind that the directory refuses
    login(client, "bob")
    run_sync()
    use_ldap()
    directory.stop()
    login(client, "carol")  # the directory is down
    run_sync()

    secrets = [directory.service_password, WRONG_BIND_PASSWORD, WRONG_USER_PASSWORD, *PASSWORDS.values()]
    out, err = capfd.readouterr()
    records = " ".join([caplog.text, out, err,
                        *(" ".join(run.errors) for run in DirectorySyncRun.objects.all()),
                        *AuditEvent.objects.values_list("message", flat=True)])
    assert "Caught LDAPError" in caplog.text  # the errors were logged...
    assert "refused the bind DN" in records
    leaked = [secret for secret in secrets if secret in records]
    assert leaked == []  # ...without a password
