"""A throwaway OpenLDAP server on a loopback port, for the identity tests and the sync benchmark.

    directory = Slapd(workdir)
    directory.start(seed_ldif)          # slapadd -q offline, then slapd in the foreground
    directory.stop(); directory.start() # down and up again, same data, same port

The database (mdb) lives in `workdir`. The server is our child process, so stop() reaps it:
no zombie is left behind (a daemonised slapd lingers ~2 s after SIGTERM).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"

SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
SERVICE_DN = f"cn=vdi-broker,ou=services,{SUFFIX}"


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Slapd:
    def __init__(self, workdir: Path, *, root_password: str = "root-secret", service_password: str = "svc-secret",
                 size_limit: int = 500, service_unlimited: bool = True, tls_cert: Path | None = None,
                 tls_key: Path | None = None):
        self.workdir = Path(workdir)
        self.root_password = root_password
        self.service_password = service_password
        self.size_limit = size_limit
        self.service_unlimited = service_unlimited
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._log = None
        self._loaded = False

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, seed_ldif: str | None = None) -> None:
        if not self._loaded:
            self._write_config()
            self._load(base_entries(self.service_password) + (seed_ldif or ""))
            self._loaded = True
        self._log = open(self.workdir / "slapd.log", "ab")
        self.process = subprocess.Popen(
            [SLAPD, "-f", str(self.workdir / "slapd.conf"), "-h", self.uri, "-d", "0"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}; see {self.workdir / 'slapd.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("slapd did not listen within 10 s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- data -------------------------------------------------------------------------------

    def connection(self):
        import ldap

        conn = ldap.initialize(self.uri)
        conn.simple_bind_s(ROOT_DN, self.root_password)
        return conn

    def add(self, dn: str, attrs: dict) -> None:
        import ldap.modlist

        conn = self.connection()
        try:
            conn.add_s(dn, ldap.modlist.addModlist(_encode(attrs)))
        finally:
            conn.unbind_s()

    def delete(self, dn: str) -> None:
        conn = self.connection()
        try:
            conn.delete_s(dn)
        finally:
            conn.unbind_s()

    def modify(self, dn: str, changes: list[tuple[int, str, list[str] | None]]) -> None:
        conn = self.connection()
        try:
            conn.modify_s(dn, [(op, attr, [v.encode() for v in values] if values else None)
                               for op, attr, values in changes])
        finally:
            conn.unbind_s()

    def add_value(self, dn: str, attr: str, value: str) -> None:
        import ldap

        self.modify(dn, [(ldap.MOD_ADD, attr, [value])])

    def remove_value(self, dn: str, attr: str, value: str) -> None:
        import ldap

        self.modify(dn, [(ldap.MOD_DELETE, attr, [value])])

    def replace_values(self, dn: str, attr: str, values: list[str]) -> None:
        import ldap

        self.modify(dn, [(ldap.MOD_REPLACE, attr, values)])

    # -- internals --------------------------------------------------------------------------

    def _write_config(self) -> None:
        data = self.workdir / "data"
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True)
        limits = ""
        if self.service_unlimited:
            # Paged searches may return the whole directory to the service account, page by page.
            limits = f'limits dn.exact="{SERVICE_DN}" size.prtotal=unlimited\n'
        tls = ""
        if self.tls_cert and self.tls_key:
            tls = f"TLSCertificateFile {self.tls_cert}\nTLSCertificateKeyFile {self.tls_key}\n"
        (self.workdir / "slapd.conf").write_text(f"""\
include {SCHEMA_DIR}/core.schema
include {SCHEMA_DIR}/cosine.schema
include {SCHEMA_DIR}/inetorgperson.schema
include {SCHEMA_DIR}/nis.schema
pidfile {self.workdir}/slapd.pid
argsfile {self.workdir}/slapd.args
modulepath {MODULE_DIR}
moduleload back_mdb
{tls}sizelimit {self.size_limit}
database mdb
maxsize 1073741824
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ssha(self.root_password)}
directory {data}
index objectClass eq
index uid,cn,memberUid,gidNumber eq
index member,uniqueMember eq
# The broker's service account reads everything but passwords; users may only bind as themselves.
access to attrs=userPassword by anonymous auth by self write by * none
access to * by dn.exact="{SERVICE_DN}" read by self read by * none
{limits}""")

    def _load(self, ldif: str) -> None:
        path = self.workdir / "seed.ldif"
        path.write_text(ldif)
        result = subprocess.run([SLAPADD, "-q", "-f", str(self.workdir / "slapd.conf"), "-l", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"slapadd failed: {result.stderr.strip()}")


def _encode(attrs: dict) -> dict:
    return {name: [v.encode() if isinstance(v, str) else v for v in (values if isinstance(values, list) else [values])]
            for name, values in attrs.items()}


def base_entries(service_password: str) -> str:
    return f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: vdi-broker
userPassword: {ssha(service_password)}

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

"""


def person(uid: str, password: str, *, given: str, surname: str, mail: str | None = None,
           uid_number: int | None = None, gid_number: int | None = None) -> str:
    """An inetOrgPerson (and posixAccount when given numbers) under ou=people, as LDIF."""
    classes = "objectClass: inetOrgPerson\n"
    posix = ""
    if uid_number is not None:
        classes += "objectClass: posixAccount\n"
        posix = (f"uidNumber: {uid_number}\ngidNumber: {gid_number or uid_number}\n"
                 f"homeDirectory: /home/{uid}\n")
    return (f"dn: uid={uid},ou=people,{SUFFIX}\n{classes}uid: {uid}\ncn: {given} {surname}\n"
            f"givenName: {given}\nsn: {surname}\nmail: {mail or uid + '@example.com'}\n{posix}"
            f"userPassword: {ssha(password)}\n\n")


def group_of_names(cn: str, member_dns: list[str], *, ou: str = "groups") -> str:
    # groupOfNames requires at least one member; an empty group points at the service account.
    members = "".join(f"member: {dn}\n" for dn in (member_dns or [SERVICE_DN]))
    return f"dn: cn={cn},ou={ou},{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n{members}\n"


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{SUFFIX}"


def group_dn(cn: str, *, ou: str = "groups") -> str:
    return f"cn={cn},ou={ou},{SUFFIX}"
