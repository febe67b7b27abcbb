"""StartTLS: logins and the sync talk to the directory over TLS, checked against the given CA."""

import subprocess

import pytest

from identity.models import DirectorySyncRun
from tests.identity.conftest import login, run_sync, seed_ldif
from tests.support.slapd import Slapd

UNAVAILABLE = b"The company directory is unavailable right now; try again in a few minutes."


def make_ca(directory, name):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-keyout", directory / f"{name}.key", "-out", directory / f"{name}.pem"],
                   check=True, capture_output=True)
    return directory / f"{name}.pem"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory, "test-ca")
    other_ca = make_ca(directory, "other-ca")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", directory / "server.key", "-out", directory / "server.csr"], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", directory / "server.csr", "-CA", ca, "-CAkey",
                    directory / "test-ca.key", "-CAcreateserial", "-days", "1", "-extfile", directory / "san.ext",
                    "-out", directory / "server.pem"], check=True, capture_output=True)
    return {"ca": ca, "other_ca": other_ca, "cert": directory / "server.pem", "key": directory / "server.key"}


@pytest.fixture
def directory(tmp_path, certificates):
    server = Slapd(tmp_path / "slapd-tls", tls_cert=certificates["cert"], tls_key=certificates["key"])
    server.start(seed_ldif())
    yield server
    server.stop()


def test_login_and_sync_over_starttls(client, use_ldap, company, certificates):
    use_ldap(AUTH_LDAP_START_TLS="on", AUTH_LDAP_CA_CERT_FILE=str(certificates["ca"]))

    login(client, "alice")
    run = run_sync()

    assert "_auth_user_id" in client.session
    assert run.status == DirectorySyncRun.Status.SUCCEEDED and run.users_created == 4


def test_a_certificate_from_another_ca_is_refused(client, use_ldap, company, certificates):
    use_ldap(AUTH_LDAP_START_TLS="on", AUTH_LDAP_CA_CERT_FILE=str(certificates["other_ca"]))

    response = login(client, "alice")
    run = run_sync()

    assert UNAVAILABLE in response.content
    assert run.status == DirectorySyncRun.Status.FAILED and "StartTLS with ldap://127.0.0.1" in run.errors[0]
