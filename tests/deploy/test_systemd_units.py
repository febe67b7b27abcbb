"""The systemd units shipped in deploy/systemd/ start what they say. systemd is not PID 1 here,
so each unit is checked by `systemd-analyze verify` and then started as systemd would start it:
its ExecStart (specifiers and ${VARS} expanded), Environment= then EnvironmentFile= (the
shipped vdi.env.example, installed with this test's database, Redis and ports), its
WorkingDirectory, User/Group/SupplementaryGroups and UMask, against the test database. Then the
part must answer: the portal /healthz, the gateway /healthz and a websocket handshake, a worker
or agent `celery inspect ping`, beat its first schedule. Nothing here repeats a unit's command.

The units name the install root /opt/vdi and /etc/vdi/vdi.env (docs/production.md); the test
installs them with this checkout as the root instead, the one change an operator also makes
when installing elsewhere. Where the checkout's virtualenv runs on a Python the service user
cannot read (this machine's lives under /root, in pyenv), the test gives the units a virtualenv
on Debian's /usr/bin/python3, as a Debian install has, that sees the checkout's packages."""

import grp
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.request import Request, urlopen

import pytest
from django.conf import settings

from tests.support import stack
from tests.support.stack import ROOT, free_port

UNITS = ROOT / "deploy" / "systemd"
INSTALL_ROOT, INSTALL_ENV_FILE = "/opt/vdi", "/etc/vdi/vdi.env"
AGENT_INSTANCE = "hv-units-test"
UNIT_NAMES = sorted(p.name for p in UNITS.glob("*.service"))

pytestmark = [pytest.mark.django_db(transaction=True)]


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key's values in order (a key may repeat)."""
    sections, current, pending = {}, None, ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def read_environment_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def expand_specifiers(text: str, instance: str) -> str:
    table = {"i": instance, "I": instance, "H": socket.gethostname(), "%": "%"}
    return re.sub(r"%(.)", lambda m: table[m.group(1)], text)


def expand_variables(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def installed(unit_text: str, env_file: Path, venv: Path) -> str:
    return (unit_text.replace(f"{INSTALL_ROOT}/.venv", str(venv)).replace(INSTALL_ROOT, str(ROOT))
            .replace(INSTALL_ENV_FILE, str(env_file)))


SERVICE_FILES = Path("/var/tmp/vdi-test-units")  # reachable by the service user (/tmp/pytest-of-root is not)


@pytest.fixture(scope="module")
def service_venv(service_user):
    checkout = ROOT / ".venv"
    if all(subprocess.run(["runuser", "-u", user, "--", str(checkout / "bin" / "python"), "-c", ""],
                          capture_output=True).returncode == 0 for user in service_user):
        yield checkout
        return
    SERVICE_FILES.mkdir(mode=0o755, exist_ok=True)
    made = Path(tempfile.mkdtemp(prefix="venv-", dir=SERVICE_FILES))
    made.chmod(0o755)
    venv = made / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3.*")) / "site-packages"
    (site / "checkout.pth").write_text(str(next((checkout / "lib").glob("python3.*")) / "site-packages") + "\n")
    for script in (checkout / "bin").iterdir():
        text = script.read_bytes()
        if script.is_file() and text.startswith(b"#!" + str(checkout / "bin" / "python").encode()):
            target = venv / "bin" / script.name
            if not target.exists():
                target.write_bytes(b"#!" + str(venv / "bin" / "python").encode() + text[text.index(b"\n"):])
                target.chmod(0o755)
    # What pip installs only on Debian's older 3.11 (requirements.txt's markers), for it.
    older_only = [line.split(";")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if "python_full_version <" in line and not line.startswith("#")]
    if older_only:
        # (Kept between runs outside var/, which is 0700: the service user must read it.)
        cache = SERVICE_FILES / re.sub(r"\W", "_", "-".join(older_only))
        if not cache.exists():
            subprocess.run([str(checkout / "bin" / "pip"), "install", "-q", "--no-deps", "--target",
                            f"{cache}.partial", *older_only], check=True)
            Path(f"{cache}.partial").rename(cache)
            cache.chmod(0o755)
        (site / "older-python.pth").write_text(f"{cache}\n")
    yield venv
    shutil.rmtree(made)


@pytest.fixture(scope="module")
def service_user():
    """The account the units run as, made as docs/production.md makes it."""
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: scripts/install-deps.sh --test installs it")
    names = {v for n in UNIT_NAMES for v in parse_unit((UNITS / n).read_text())["Service"].get("User", [])}
    for name in names - {"root"}:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/vdi-broker",
                            "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    return names


@pytest.fixture
def install(tmp_path, service_user, service_venv, django_db_setup):
    """/etc/vdi/vdi.env from the shipped example, filled in for this test's services, and the
    state directory systemd would make (StateDirectory=, 0700, the service user's)."""
    SERVICE_FILES.mkdir(mode=0o755, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="state-", dir=SERVICE_FILES))
    state.chmod(0o700)
    shutil.chown(state, "vdi", "vdi")
    run = settings.CELERY_TASK_DEFAULT_QUEUE
    values = {
        "DATABASE_URL": stack.test_database_url(), "REDIS_URL": settings.CELERY_BROKER_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "CELERY_TASK_DEFAULT_QUEUE": run,
        "CHANNEL_LAYER_PREFIX": run, "VDI_AGENT_QUEUE_PREFIX": settings.VDI_AGENT_QUEUE_PREFIX,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "VDI_VAR_DIR": str(state), "VDI_PORT": str(free_port()), "VDI_GATEWAY_PORT": str(free_port()),
        "VDI_WORKERS": "1",
    }
    example = (UNITS / "vdi.env.example").read_text()
    for key, value in values.items():
        line = f"{key}={value}"
        example, found = re.subn(rf"(?m)^#?{key}=.*$", line, example)
        example += "" if found else f"\n{line}\n"
    etc = Path(tempfile.mkdtemp(prefix="etc-", dir=SERVICE_FILES))  # as /etc/vdi: 0750 root:vdi
    etc.chmod(0o750)
    shutil.chown(etc, "root", "vdi")
    env_file = etc / "vdi.env"
    env_file.write_text(example)
    env_file.chmod(0o640)
    shutil.chown(env_file, "root", "vdi")
    yield env_file, service_venv
    shutil.rmtree(state)
    shutil.rmtree(etc)


class Started:
    def __init__(self, name: str, install: tuple[Path, Path], tmp_path: Path):
        unit_path = tmp_path / (name.replace("@.", f"@{AGENT_INSTANCE}."))
        unit_path.write_text(installed((UNITS / name).read_text(), *install))
        self.name, self.unit_path, self.log_path = name, unit_path, tmp_path / f"{name}.log"
        self.unit = parse_unit(unit_path.read_text())
        service = self.unit["Service"]
        instance = AGENT_INSTANCE if "@" in name else ""
        user = service.get("User", ["root"])[-1]
        entry = pwd.getpwnam(user)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8",
               "USER": user, "LOGNAME": user, "HOME": entry.pw_dir, "SHELL": entry.pw_shell}
        for assignments in service.get("Environment", []):
            env.update(word.split("=", 1) for word in shlex.split(expand_specifiers(assignments, instance)))
        for path in service.get("EnvironmentFile", []):
            env.update(read_environment_file(Path(path.lstrip("-"))))
        self.env = env
        (command,) = service["ExecStart"]
        self.argv = shlex.split(expand_variables(expand_specifiers(command, instance), env))
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.argv, cwd=service["WorkingDirectory"][-1], env=env, stdout=self.log, stderr=subprocess.STDOUT,
            user=user, group=service.get("Group", [entry.pw_gid])[-1],
            extra_groups=[g for groups in service.get("SupplementaryGroups", []) for g in groups.split()] or None,
            umask=int(service.get("UMask", ["0022"])[-1], 8))

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, check, *, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                result = check()
                if result:
                    return result
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} within {timeout} s:\n{self.output()[-3000:]}")
            time.sleep(0.3)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def http_ok(url: str, **headers) -> bool:
    with urlopen(Request(url, headers=headers), timeout=3) as answer:
        return answer.status == 200 and answer.read() == b"ok\n"


def celery_pong(started: Started, node: str) -> bool:
    answer = subprocess.run([str(ROOT / ".venv" / "bin" / "celery"), "-A", "config", "inspect", "ping", "-d", node,
                             "--timeout", "3", "--json"], cwd=ROOT, env=started.env, capture_output=True, text=True)
    return answer.returncode == 0 and json.loads(answer.stdout.strip().splitlines()[-1]).get(node) == {"ok": "pong"}


def check_portal(started: Started):
    url = f"http://127.0.0.1:{started.env['VDI_PORT']}/healthz"
    # The way the TLS proxy asks (VDI_HTTPS=on redirects plain http; the proxy says https).
    started.wait_for(lambda: http_ok(url, **{"X-Forwarded-Proto": "https"}), timeout=60, what="answer at /healthz")


def check_gateway(started: Started):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port = started.env["VDI_GATEWAY_PORT"]
    started.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60, what="answer at /healthz")
    # A console handshake without a login is answered (403), not dropped: the route is live.
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{port}/ws/console/1/?ticket=x", origin="https://vdi.example.com",
                open_timeout=10).close()
    assert refused.value.response.status_code == 403


def check_worker(started: Started):
    # The unit's -n, as Celery expands it (%h: this machine's host name).
    node = started.argv[started.argv.index("-n") + 1].replace("%h", socket.gethostname())
    started.wait_for(lambda: celery_pong(started, node), timeout=90, what=f"pong from {node}")


def check_beat(started: Started):
    started.wait_for(lambda: "beat: Starting" in started.output(), timeout=60, what="start of beat")
    schedule = Path(started.argv[started.argv.index("--schedule") + 1])
    started.wait_for(lambda: list(schedule.parent.glob(schedule.name + "*")), timeout=30, what="schedule file")
    time.sleep(2)
    assert started.process.poll() is None, started.output()[-3000:]


CHECKS = {"vdi-portal.service": check_portal, "vdi-gateway.service": check_gateway,
          "vdi-worker.service": check_worker, "vdi-agent@.service": check_worker, "vdi-beat.service": check_beat}


def test_every_shipped_unit_is_tested():
    assert set(UNIT_NAMES) == set(CHECKS), "a unit in deploy/systemd/ has no start check here"
    assert (UNITS / "vdi.env.example").exists()


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_the_unit_verifies_and_starts(name, install, tmp_path):
    started = Started(name, install, tmp_path)
    try:
        verify = subprocess.run(["systemd-analyze", "verify", str(started.unit_path)], capture_output=True, text=True)
        assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr
        CHECKS[name](started)
        # It runs as the unit says, and logs as the example configures (JSON lines).
        user = started.unit["Service"].get("User", ["root"])[-1]
        status = Path(f"/proc/{started.process.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{pwd.getpwnam(user).pw_uid}\s", status, re.M), status
        for group in started.unit["Service"].get("SupplementaryGroups", []):
            assert str(grp.getgrnam(group).gr_gid) in re.search(r"^Groups:(.*)$", status, re.M).group(1)
        lines = [l for l in started.output().splitlines() if l.startswith("{")]
        assert lines and all(json.loads(l)["level"] for l in lines)
    finally:
        started.stop()


def test_vdi_manage_runs_django_commands_as_the_service_user_with_the_env_file(install):
    env_file, venv = install
    env = {"PATH": os.environ["PATH"], "VDI_ENV_FILE": str(env_file), "VDI_VENV": str(venv)}
    answer = subprocess.run([str(ROOT / "deploy" / "vdi-manage"), "shell", "-c",
                             "import os; from django.conf import settings; from django.db import connection; "
                             "print(os.getuid(), connection.settings_dict['NAME'], settings.VDI_LOG_FORMAT)"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr[-2000:]
    uid, database, log_format = answer.stdout.split()[-3:]
    assert int(uid) == pwd.getpwnam("vdi").pw_uid
    assert database == settings.DATABASES["default"]["NAME"] and log_format == "json"
