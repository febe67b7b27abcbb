"""Farm sessions: a user's shared session on one of a farm's session hosts, launch to log off.

A launch queues a session row with no host. Placement (`place_waiting_sessions`, run by the
launch itself, after every finished logon and at every periodic pass) hands the waiting
sessions, oldest first, to the enabled, online, undrained host of the farm with the lowest
load that has room: fewer live sessions than the farm's `max_sessions_per_host` and fewer
logons in progress than its `max_concurrent_logons_per_host` (logon-storm throttling). A
user's sessions on one farm (the desktop and each published application) go to one host.
Those that find no room wait in order and see their place. Starting and ending a session is
the work of the agent on the host (broker/session_agent.py), sent to that host's own queue;
this module only writes rows.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import selectors
from ..console import control as console_control
from ..console.close_codes import CloseCode
from ..enqueue import enqueue_after_commit
from ..models import BrokerEvent, Desktop, DesktopState, Host, Pool, PublishedApp
from .errors import LaunchRefused
from .provisioning import new_desktop

log = logging.getLogger(__name__)
S = DesktopState
# Farm sessions holding a place on their host: a logon in progress or a running session.
PLACED = (S.STARTING, S.RUNNING)


def launch_farm_session(*, user, pool: Pool, application: PublishedApp | None = None) -> Desktop:
    """The user's session of `pool` (the full desktop, or one published application): the
    live one if there is one (reconnect), else a new one waiting for placement."""
    if application is None and not pool.farm_offers_desktop:
        raise LaunchRefused(f"{pool} offers applications only; launch one of them.")
    if application is not None and (application.pool_id != pool.pk or not application.is_enabled):
        raise LaunchRefused("This application is not offered here any more.")
    session = selectors.live_desktop_of(user=user, pool=pool, application=application)
    if session is not None and session.state in (S.FAILED, S.DELETING):
        _discard(session, reason="a new launch replaces it")
        session = None
    if session is not None:
        return session
    try:
        with transaction.atomic():
            session = new_desktop(pool=pool, host=None, version=None, user=user, application=application)
            what = application.display_name if application else "desktop"
            session.note(f"{what} session requested by {user.get_username()}", actor=user)
    except IntegrityError:
        # The same user's other launch (a second tab) won the race: use its session.
        session = selectors.live_desktop_of(user=user, pool=pool, application=application)
        if session is None:
            raise
        return session
    # Placed here and now, not by a task: a logon waits on this step. The agent's start is sent
    # when the placement commits; a session that finds no room waits for the next placement.
    if place_waiting_sessions(pool_id=pool.pk):
        session.refresh_from_db(fields=["state", "host", "state_changed_at"])
    return session


def _discard(session: Desktop, *, reason: str) -> None:
    """A failed or lost session: nothing of it runs that the broker could reach (its host is
    gone, or the agent's start failed); an agent that comes back kills what it no longer knows."""
    if session.state == S.FAILED:
        session.transition(S.DELETING, expected=S.FAILED, message=f"discarded: {reason}")
    session.transition(S.DELETED, expected=S.DELETING, message="the session's row is closed", vnc_port=None)


def place_waiting_sessions(*, pool_id: int) -> int:
    """Hand waiting sessions, oldest first, to hosts with room; return how many were placed."""
    placed = 0
    with transaction.atomic():
        # Placements of one farm take turns (a row lock on PostgreSQL, the write lock on SQLite):
        # the room counted below is exact however many launches and agents call this at once.
        pool = Pool.objects.select_for_update().filter(pk=pool_id, kind=Pool.Kind.FARM).first()
        if pool is None:
            return 0
        hosts = [host for host in session_hosts_of(pool) if host.accepts_new_desktops]
        for session in selectors.waiting_sessions(pool=pool).select_related("user", "application"):
            host = _host_for(session, pool, hosts)
            if host is None:
                break  # the rest wait in order: nobody overtakes the one in front
            if session.transition(S.STARTING, expected=S.QUEUED, message=f"placed on {host.name}; starting",
                                  host=host):
                enqueue_after_commit("broker.session_tasks.start_farm_session_task", session.pk,
                                     queue=host.agent_queue)
                placed += 1
    return placed


def session_hosts_of(pool: Pool) -> list[Host]:
    return list(Host.objects.filter(farm=pool, kind=Host.Kind.SESSION_HOST).order_by("name"))


def session_host_refusal(host: Host, pool: Pool) -> tuple[str, str] | None:
    """Why `host` takes no new session of `pool` now, as (code, plain words); None when it has
    room. Placement asks this for each host; so do the "why isn't it ready" pages."""
    if not host.is_enabled:
        return "disabled", "disabled by an admin"
    if not host.is_online:
        return "offline", "offline: its agent has not reported"
    if host.in_maintenance:
        return "maintenance", "draining (in maintenance): it takes no new sessions"
    on_host = Desktop.objects.filter(host=host, pool=pool, state__in=PLACED)
    running = on_host.count()
    if running >= pool.max_sessions_per_host:
        return "full_sessions", f"full: {running} of {pool.max_sessions_per_host} sessions"
    logons = on_host.filter(state=S.STARTING).count()
    if logons >= pool.max_concurrent_logons_per_host:
        return "logons_busy", (f"busy: {logons} logons in progress (at most {pool.max_concurrent_logons_per_host} "
                               "at once)")
    return None


def _host_for(session: Desktop, pool: Pool, hosts: list[Host]) -> Host | None:
    with_room = [h for h in hosts if session_host_refusal(h, pool) is None]
    if not with_room:
        return None
    # The user's other sessions on this farm are on one host: keep them together.
    mine = set(Desktop.objects.filter(pool=pool, user_id=session.user_id, state__in=PLACED, host__isnull=False)
               .values_list("host_id", flat=True))
    for host in with_room:
        if host.pk in mine:
            return host
    return min(with_room, key=lambda h: _load_score(h, pool))


def _load_score(host: Host, pool: Pool) -> float:
    """Lower is emptier: the host's share of sessions, plus its CPU load and memory in use as
    its agent last reported them (each a fraction of what the host has)."""
    sessions = Desktop.objects.filter(host=host, state__in=PLACED).count()
    score = sessions / pool.max_sessions_per_host
    if host.load_average is not None and host.cpus:
        score += 0.5 * min(host.load_average / host.cpus, 2.0)
    if host.memory_available_mib is not None and host.memory_mib:
        score += 0.5 * (1 - host.memory_available_mib / host.memory_mib)
    return score


def log_off_session(*, session: Desktop, actor=None, reason: str) -> None:
    """End the session and every process of it (the agent does it on the host); its consoles
    close now. The next launch starts a fresh session."""
    if session.state == S.QUEUED or session.host_id is None:
        if session.transition(S.DELETING, expected={S.QUEUED, S.FAILED}, message=f"cancelled: {reason}",
                              actor=actor):
            session.transition(S.DELETED, expected=S.DELETING, message="it never started")
        return
    if session.transition(S.DELETING, expected={S.STARTING, S.RUNNING, S.FAILED}, message=f"log off: {reason}",
                          actor=actor):
        console_control.close_consoles(group=console_control.desktop_group(session.pk),
                                       code=CloseCode.DESKTOP_CLOSED, reason="You logged off.")
        enqueue_after_commit("broker.session_tasks.end_farm_session_task", session.pk,
                             queue=session.host.agent_queue)


def session_ended_on_host(*, session: Desktop, reason: str) -> None:
    """The agent found the session gone (its application exited, its display died): close
    the row and its consoles, and let the next one in the queue in."""
    if session.transition(S.DELETING, expected={S.STARTING, S.RUNNING}, message=reason):
        console_control.close_consoles(group=console_control.desktop_group(session.pk),
                                       code=CloseCode.DESKTOP_CLOSED, reason=f"Your session ended: {reason}.")
    session.transition(S.DELETED, expected=S.DELETING, message="session ended on its host", vnc_port=None)
    enqueue_after_commit("broker.session_tasks.place_waiting_sessions_task", session.pool_id)


# -- session hosts' health ---------------------------------------------------------------

def silent_after() -> timedelta:
    """A session host whose agent has not reported for three report periods is offline."""
    return timedelta(seconds=max(3 * settings.VDI_SESSION_HOST_REPORT_SECONDS, 30))


def check_session_hosts(*, now=None) -> list[str]:
    """Ask every session host's agent for a report, and take those silent for too long for
    dead: offline, their sessions lost (users get a new session elsewhere at their next
    launch). Returns the names of hosts found dead in this pass."""
    now = now or timezone.now()
    dead = []
    for host in Host.objects.filter(kind=Host.Kind.SESSION_HOST, is_enabled=True):
        # Expires before the next pass: a dead agent's queue does not fill with stale reports.
        enqueue_after_commit("broker.session_tasks.report_session_host_task", host.pk, queue=host.agent_queue,
                             expires=settings.VDI_SESSION_HOST_REPORT_SECONDS)
        last_sign = host.last_checked_at or host.created_at
        if host.is_online and now - last_sign > silent_after():
            reason = (f"session host {host.name} stopped answering (no report from its agent for "
                      f"{(now - last_sign).total_seconds():.0f} s): agent down or host unreachable")
            if Host.objects.filter(pk=host.pk, is_online=True).update(is_online=False, last_error=reason):
                BrokerEvent.objects.create(kind=BrokerEvent.Kind.HOST, host=host, message=f"host went offline: {reason}")
                lost = mark_sessions_lost(host=host, reason=reason)
                log.warning("%s; %d session(s) lost", reason, lost)
                dead.append(host.name)
    return dead


def mark_sessions_lost(*, host: Host, reason: str) -> int:
    lost = 0
    for session in Desktop.objects.filter(host=host, state__in=PLACED):
        if session.transition(S.FAILED, expected=session.state, message=f"lost: {reason}",
                              last_error=f"Your session was lost: {reason}. Launch again for a new session."):
            console_control.close_consoles(group=console_control.desktop_group(session.pk),
                                           code=CloseCode.DESKTOP_CLOSED,
                                           reason="Your session's host stopped answering. Launch again.")
            lost += 1
    return lost
