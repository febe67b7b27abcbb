"""What the session agent does on its session host; the only broker code that touches one.

The agent is a Celery worker on the host, consuming that host's own queue (Host.agent_queue),
started as root (it creates the employees' OS accounts and starts their sessions under them):

    celery -A config worker -Q agent.<host name> --pool threads --concurrency 8 -n agent.<host name>@%h

It is called only through broker/session_tasks.py. Each call re-reads the session row and
checks its state, so a redelivered or duplicated task does no harm. The host-side work itself
(accounts, Xvnc displays, processes) is broker/sessionhost/, which knows nothing of Django.
"""

import logging
import os
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import sessionhost
from .console.tickets import console_ticket_validity_s, new_console_password, seal_first_password
from .enqueue import enqueue_after_commit
from .models import BrokerEvent, Desktop, DesktopState, Host
from .models.desktops import LIVE_STATES
from .services.farm_sessions import session_ended_on_host
from .sessionhost.vncpasswd import password_file_digest

log = logging.getLogger(__name__)
S = DesktopState
# How long a new session's first console password waits for the launch page's ticket (which
# asks at once when the session runs); a later ticket sets a password through the agent.
FIRST_PASSWORD_KEPT_S = 60


class NotThisSession(Exception):
    """The session is not (or no longer) one this host runs: the caller's ticket is refused."""


def state_dir_of(host: Host) -> str:
    """Where this host's agent keeps its sessions' records (several agents may share a machine
    in tests and demos; each keeps to its own)."""
    return os.path.join(settings.VDI_SESSION_STATE_DIR, host.name)


def _load(desktop_id: int) -> Desktop | None:
    return Desktop.objects.select_related("host", "pool", "user", "application").filter(pk=desktop_id).first()


def account_of(user) -> sessionhost.Account:
    """The employee's own OS account on this host: created at their first session, with a
    private home (0700) kept across sessions; the same name on every host of the farm."""
    name = sessionhost.account_name(prefix=settings.VDI_SESSION_ACCOUNT_PREFIX, user_id=user.pk,
                                    username=user.get_username())
    return sessionhost.ensure_account(name, home_root=settings.VDI_SESSION_HOME_ROOT)


def start_session(*, desktop_id: int) -> None:
    session = _load(desktop_id)
    if session is None or session.state != S.STARTING:
        return
    first_password = new_console_password("vnc")
    try:
        account = account_of(session.user)
        app = session.application
        info = sessionhost.start_session(
            session_name=session.name, account=account, kind="app" if app else "desktop",
            command=app.argv if app else None,
            # The first console ticket's password (kept sealed on the row): each later ticket
            # sets a fresh password of its own through the agent.
            password=first_password,
            listen_address=session.host.console_address, geometry=session.pool.session_geometry,
            state_dir=state_dir_of(session.host))
    except sessionhost.SessionHostError as exc:
        log.warning("session %s did not start on %s: %s", session.name, session.host.name, exc)
        session.transition(S.FAILED, expected=S.STARTING, message=f"did not start: {exc}",
                           last_error=f"Your session did not start on {session.host.name}: {exc}. "
                                      "Press Launch to try again; tell your administrator if it fails again.")
        enqueue_after_commit("broker.session_tasks.place_waiting_sessions_task", session.pool_id)
        return
    until = timezone.now() + timedelta(seconds=FIRST_PASSWORD_KEPT_S)
    running = session.transition(
        S.RUNNING, expected=S.STARTING, vnc_port=info.port, last_error="", first_console_password_until=until,
        sealed_first_console_password=seal_first_password(first_password, desktop_id=session.pk, until=until),
        message=f"session running as {account.name} on display :{info.display} (port {info.port})")
    if not running:  # logged off (or lost) while it started: it must not stay behind
        sessionhost.end_session(session_name=session.name, state_dir=state_dir_of(session.host))
    else:
        # Unless a ticket took it and set a timer of its own, nobody can use the first password
        # after this: a ticket taken at the last moment still has its own validity.
        enqueue_after_commit("broker.session_tasks.expire_session_password_task", session.pk, session.host_id,
                             password_file_digest(first_password), queue=session.host.agent_queue,
                             countdown=FIRST_PASSWORD_KEPT_S + console_ticket_validity_s())
    # A logon finished: the next session waiting for this host may start.
    enqueue_after_commit("broker.session_tasks.place_waiting_sessions_task", session.pool_id)


def end_session(*, desktop_id: int) -> None:
    session = _load(desktop_id)
    if session is None or session.state != S.DELETING:
        return
    sessionhost.end_session(session_name=session.name, state_dir=state_dir_of(session.host))
    session.transition(S.DELETED, expected=S.DELETING, message="session ended; no process of it is left",
                       vnc_port=None)
    enqueue_after_commit("broker.session_tasks.place_waiting_sessions_task", session.pool_id)


def set_console_password(*, desktop_id: int, host_id: int, password: str) -> int:
    """Give the session's display `password` (the next VNC login needs it; open consoles stay)
    and return the port it listens on."""
    session = _load(desktop_id)
    if session is None or session.host_id != host_id or session.state != S.RUNNING or not session.vnc_port:
        raise NotThisSession(f"session {desktop_id} does not run on this host")
    try:
        sessionhost.set_session_password(session_name=session.name, password=password,
                                         state_dir=state_dir_of(session.host))
    except sessionhost.SessionHostError as exc:
        raise NotThisSession(str(exc)) from exc
    return session.vnc_port


def expire_console_password(*, desktop_id: int, host_id: int, digest: str) -> bool:
    # A first password nobody took goes from the row too (it no longer works on the display).
    Desktop.objects.filter(pk=desktop_id, first_console_password_until__lte=timezone.now()).update(
        sealed_first_console_password="", first_console_password_until=None)
    session = _load(desktop_id)
    if session is None or session.host_id != host_id:
        return False
    return sessionhost.expire_session_password(session_name=session.name, digest=digest,
                                               state_dir=state_dir_of(session.host))


def report(*, host_id: int) -> dict:
    """The agent's sign of life and load, and its reconciliation of the sessions it runs with
    the broker's books: sessions that ended by themselves (an application exited) close their
    rows; sessions the broker no longer knows (logged off while the agent was down) are ended.
    An agent that restarted adopts the sessions still running, which keep their rows."""
    host = Host.objects.get(pk=host_id)
    state_dir = state_dir_of(host)
    load = sessionhost.host_load(state_dir=state_dir)
    local = {s.session_name: s for s in sessionhost.list_sessions(state_dir=state_dir)}
    rows = {d.name: d for d in Desktop.objects.filter(host=host, state__in=LIVE_STATES).select_related("pool")}
    done = {"ended_here": [], "killed_unknown": []}

    for name, info in local.items():
        row = rows.get(name)
        if info.alive and (row is None or row.state in (S.DELETING, S.FAILED)):
            sessionhost.end_session(session_name=name, state_dir=state_dir)
            done["killed_unknown"].append(name)
            BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host,
                                       message=f"ended session {name}: the broker no longer knows it")
        elif not info.alive:
            sessionhost.end_session(session_name=name, state_dir=state_dir)  # clears what is left of it
    for name, row in rows.items():
        info = local.get(name)
        if row.state == S.RUNNING and (info is None or not info.alive):
            reason = "the application exited" if row.application_id else "its display stopped"
            with transaction.atomic():
                session_ended_on_host(session=row, reason=reason)
            done["ended_here"].append(name)
        elif row.state == S.DELETING and (info is None or not info.alive):
            row.transition(S.DELETED, expected=S.DELETING, message="session ended", vnc_port=None)

    came_back = Host.objects.filter(pk=host.pk, is_online=False).update(is_online=True)
    Host.objects.filter(pk=host.pk).update(
        last_checked_at=timezone.now(), last_error="", cpus=load.cpus, memory_mib=load.memory_total_mib,
        memory_available_mib=load.memory_available_mib, load_average=load.load1,
        sessions_running=sum(1 for s in sessionhost.list_sessions(state_dir=state_dir) if s.alive))
    if came_back:
        BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host, message="session host is back online")
        if host.farm_id:
            enqueue_after_commit("broker.session_tasks.place_waiting_sessions_task", host.farm_id)
    return done
