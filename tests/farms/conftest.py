"""A farm served by this machine as a session host: its own agent worker (a Celery worker on
the host's queue, as the README starts it), real Xvnc sessions under real OS accounts."""

import glob
import pwd
import shutil

import pytest
from django.conf import settings


@pytest.fixture(scope="session")
def agent(live_stack):
    """The agent of session host "sessions-1" (this machine), for the whole run."""
    from types import SimpleNamespace

    host = SimpleNamespace(name="sessions-1", agent_queue=f"{settings.VDI_AGENT_QUEUE_PREFIX}sessions-1")
    process = live_stack.start_agent(host)
    yield process
    _remove_sessions_and_accounts()


@pytest.fixture(autouse=True)
def _end_this_tests_sessions():
    """Each test's database starts empty (names are reused): end what the last one started."""
    yield
    end_all_sessions()


def end_all_sessions():
    """Every session of this run's agents (each host keeps its own state dir under the run's)."""
    from broker import sessionhost

    for state_dir in glob.glob(f"{settings.VDI_SESSION_STATE_DIR}/*/"):
        for info in sessionhost.list_sessions(state_dir=state_dir):
            sessionhost.end_session(session_name=info.session_name, state_dir=state_dir)


def _remove_sessions_and_accounts():
    """Leave the machine as found: the run's sessions, then its OS accounts and their homes."""
    from broker import sessionhost

    end_all_sessions()
    shutil.rmtree(settings.VDI_SESSION_STATE_DIR, ignore_errors=True)
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(settings.VDI_SESSION_ACCOUNT_PREFIX):
            sessionhost.remove_account(entry.pw_name)
    for leftover in glob.glob(f"{settings.VDI_SESSION_HOME_ROOT}/{settings.VDI_SESSION_ACCOUNT_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


@pytest.fixture
def farm(db, employees_group):
    from broker.models import Entitlement, Host, Pool, PublishedApp

    pool = Pool.objects.create(name="shared", display_name="Shared desktop", kind=Pool.Kind.FARM,
                               max_desktops=100, max_sessions_per_host=20, max_concurrent_logons_per_host=2)
    Entitlement.objects.create(pool=pool, group=employees_group)
    Host.objects.create(name="sessions-1", kind=Host.Kind.SESSION_HOST, farm=pool, console_address="127.0.0.1")
    PublishedApp.objects.create(pool=pool, name="terminal", display_name="Terminal", command="xterm",
                                icon="terminal")
    return pool


@pytest.fixture
def farm_users(employees_group, django_user_model):
    def make(*names):
        users = []
        for name in names:
            user = django_user_model.objects.create_user(name, password="correct-horse-9")
            user.groups.add(employees_group)
            users.append(user)
        return users
    return make
