"""Fixtures on real parts: libvirtd (qemu:///system, TCG guests), PostgreSQL, Redis, uvicorn,
a Celery worker, and headless Debian Chromium."""

import os

import pytest

from tests.support.stack import LiveStack

GOLDEN_IMAGE = os.environ.get("VDI_TEST_GOLDEN_IMAGE", "/var/lib/vdi/images/demo-linux-v4.qcow2")


def pytest_configure(config):
    """The tests' domains carry their own name prefix (cleanup removes only those) and their
    Celery messages go to their own Redis database, so a running `make run` is not disturbed."""
    from django.conf import settings

    from config.celery import app

    from tests.support.libvirt_cleanup import run_prefix

    settings.VDI_NAME_PREFIX = run_prefix()
    # Runs that overlap on one machine (a developer's and CI's) share Redis: each has its own
    # Celery queue and channel-layer prefix, so no run's worker takes another's tasks.
    run = settings.VDI_NAME_PREFIX.rstrip("-")
    settings.CELERY_BROKER_URL = os.environ.get("VDI_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
    settings.CELERY_TASK_DEFAULT_QUEUE = run
    app.conf.broker_url = app.conf.result_backend = settings.CELERY_BROKER_URL
    app.conf.task_default_queue = run
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = run
    # Session hosts' agents, their OS accounts and session state are the run's own too.
    settings.VDI_AGENT_QUEUE_PREFIX = f"{run}.agent."
    settings.VDI_SESSION_ACCOUNT_PREFIX = f"vt{os.getpid()}-"
    settings.VDI_SESSION_STATE_DIR = f"/var/lib/vdi/test-sessions/{run}"


@pytest.fixture(scope="session")
def golden_image_path():
    if not os.path.exists(GOLDEN_IMAGE):
        pytest.fail(f"golden image {GOLDEN_IMAGE} is missing: run scripts/build-golden-image.sh {GOLDEN_IMAGE}")
    return GOLDEN_IMAGE


@pytest.fixture(scope="session", autouse=True)
def _remove_test_domains_and_volumes():
    """Leave libvirtd as we found it: remove what finished test runs left, and ours at the end."""
    from tests.support.libvirt_cleanup import remove_test_leftovers

    remove_test_leftovers()
    yield
    leftovers = remove_test_leftovers(only_ours=True)
    if leftovers:
        print(f"\nremoved leftover test domains/volumes: {leftovers}")


@pytest.fixture(autouse=True)
def _remove_this_tests_guests(request):
    """Tests on the live stack create guests through the worker; remove them after each test,
    so the next test's pool (same names, fresh database) starts on a clean host."""
    yield
    if {"live_stack", "sso_stack"} & set(request.fixturenames):
        from tests.support.libvirt_cleanup import remove_test_leftovers

        remove_test_leftovers(only_ours=True)


@pytest.fixture
def host(db):
    from broker.models import Host

    return Host.objects.create(name="local", libvirt_uri="qemu:///system", domain_type="qemu")


# A second real hypervisor: a second libvirt daemon on this machine (scripts/start-second-libvirtd.sh),
# its own sockets, state and host UUID; the disk directory is shared, as live migration needs.
SECOND_DAEMON = os.environ.get("VDI_TEST_SECOND_DAEMON", "test-host-b")


@pytest.fixture(scope="session")
def second_daemon_uri():
    import subprocess

    from tests.support.stack import ROOT

    started = subprocess.run([str(ROOT / "scripts/start-second-libvirtd.sh"), SECOND_DAEMON], capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    yield started.stdout.strip()
    subprocess.run([str(ROOT / "scripts/start-second-libvirtd.sh"), "--stop", SECOND_DAEMON], timeout=60)


@pytest.fixture
def two_hosts(host, second_daemon_uri):
    """This machine's libvirtd and the second daemon, one storage group (they see the same disks)."""
    import subprocess

    from broker.models import Host
    from tests.support.stack import ROOT

    # Started again if a test before (a dead-host test) or another run stopped it; quick if it runs.
    subprocess.run([str(ROOT / "scripts/start-second-libvirtd.sh"), SECOND_DAEMON], capture_output=True,
                   timeout=60, check=True)

    Host.objects.filter(pk=host.pk).update(storage_group="local-disks", migration_address="127.0.0.1")
    host.refresh_from_db()
    other = Host.objects.create(name="host-b", libvirt_uri=second_daemon_uri, domain_type="qemu",
                                storage_group="local-disks", migration_address="127.0.0.1")
    return host, other


@pytest.fixture
def image(host, golden_image_path):
    from broker.models import GoldenImage
    from broker.services.images import publish_image_version

    image = GoldenImage.objects.create(name="linux", display_name="Linux")
    publish_image_version(image=image, path=golden_image_path, host=host)
    return image


@pytest.fixture
def pool(image):
    from broker.models import Pool

    return Pool.objects.create(name="desk", display_name="Office desktop", image=image)


@pytest.fixture
def floating(image, employees_group):
    """A floating pool (one spare, at most three desktops) offered to the Employees group."""
    from broker.models import Entitlement, Pool

    pool = Pool.objects.create(name="float", display_name="Call centre", image=image, kind=Pool.Kind.FLOATING,
                               min_spares=1, max_desktops=3)
    Entitlement.objects.create(pool=pool, group=employees_group)
    return pool


@pytest.fixture
def employees_group(db):
    from django.contrib.auth.models import Group

    return Group.objects.create(name="Employees")


@pytest.fixture
def employee(pool, employees_group, django_user_model):
    from broker.models import Entitlement

    user = django_user_model.objects.create_user("alice", password="correct-horse-9")
    user.groups.add(employees_group)
    Entitlement.objects.get_or_create(pool=pool, group=employees_group)
    return user


@pytest.fixture
def other_employee(pool, employees_group, django_user_model):
    user = django_user_model.objects.create_user("bob", password="battery-staple-7")
    user.groups.add(employees_group)
    return user


@pytest.fixture
def running_desktop(employee, pool):
    """A desktop provisioned for real on libvirtd (clone + define + start)."""
    from broker.models import Desktop, DesktopState
    from broker.services.provisioning import delete_desktop, desktop_name, provision_desktop
    from broker.selectors import pick_host

    desktop = Desktop.objects.create(
        pool=pool, user=employee, host=pick_host(pool=pool), image_version=pool.image.current_version(),
        name=desktop_name(pool=pool, unique=os.urandom(4).hex()),
    )
    desktop = provision_desktop(desktop_id=desktop.pk)
    assert desktop.state == DesktopState.RUNNING
    yield desktop
    delete_desktop(desktop_id=desktop.pk)


@pytest.fixture
def echo_server():
    """A loopback server speaking RFB (VNC authentication) and then echoing: a console port we
    control, for tests about the gateway alone."""
    from tests.support.stream_server import StreamServer

    with StreamServer("echo") as server:
        yield server


@pytest.fixture
def echo_desktop(pool, employee, host, echo_server):
    from tests.support.desktops import running_desktop_on

    # SPICE on the same port: the websockify tests need a SPICE desktop to refuse.
    return running_desktop_on(echo_server, spice_server=echo_server, pool=pool, user=employee, name="vditest-echo")


@pytest.fixture(scope="session")
def live_stack(django_db_setup, django_db_blocker):
    """uvicorn serving the ASGI app and a Celery worker, both on the test database."""
    stack = LiveStack()
    stack.start()
    yield stack
    stack.stop()


def pytest_terminal_summary(terminalreporter):
    from tests.support.measurements import read_measurements

    figures = read_measurements()
    if figures:
        terminalreporter.section("measurements")
        for name, value in figures.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture
def admin_client(db, admin_user):
    """pytest-django's admin_client (a client of its own), logged in as production requires of
    staff: with a verified second factor (tests/support/mfa.py)."""
    from django.test import Client

    from tests.support.mfa import verified_session

    client = Client()
    verified_session(client, admin_user)
    return client
