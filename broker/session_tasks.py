"""Thin Celery tasks of the farms: placement (central workers) and the session agent's work
(sent to one session host's own queue, run by the agent on that host)."""

from celery import shared_task

from . import session_agent
from .services import farm_sessions
from .task_retries import RETRY_WHILE_THE_DATABASE_IS_AWAY


@shared_task(**RETRY_WHILE_THE_DATABASE_IS_AWAY)
def place_waiting_sessions_task(pool_id: int):
    farm_sessions.place_waiting_sessions(pool_id=pool_id)


@shared_task
def check_session_hosts_task():
    farm_sessions.check_session_hosts()


# -- run by the agent on the session host (queue: Host.agent_queue) --------------------------

@shared_task(**RETRY_WHILE_THE_DATABASE_IS_AWAY)
def start_farm_session_task(desktop_id: int):
    session_agent.start_session(desktop_id=desktop_id)


@shared_task(**RETRY_WHILE_THE_DATABASE_IS_AWAY)
def end_farm_session_task(desktop_id: int):
    session_agent.end_session(desktop_id=desktop_id)


@shared_task(ignore_result=False)
def set_session_password_task(desktop_id: int, host_id: int, password: str) -> int | None:
    """The portal waits for this one (a console ticket): the port, or None if refused."""
    try:
        return session_agent.set_console_password(desktop_id=desktop_id, host_id=host_id, password=password)
    except session_agent.NotThisSession:
        return None


@shared_task
def expire_session_password_task(desktop_id: int, host_id: int, digest: str):
    session_agent.expire_console_password(desktop_id=desktop_id, host_id=host_id, digest=digest)


@shared_task
def report_session_host_task(host_id: int):
    session_agent.report(host_id=host_id)
