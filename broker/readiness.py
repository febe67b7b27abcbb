"""Why isn't it ready? A read: for a desktop that is not running, or a pool short of its spares,
the cause in plain words, from the same decisions the broker takes (placement's host verdicts in
broker/selectors.py, farm placement's in broker/services/farm_sessions.py, the pool's backoff,
the provisioning throttle). Shown to the admin (desktop and pool pages, the API's detail) and to
the employee (launch page, home card) — the employee's view leaves out host names, errors and
the guest's serial log.
"""

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from . import selectors
from .models import Desktop, DesktopEvent, DesktopState, Pool

S = DesktopState
SERIAL_LOG_LINES = 20
SERIAL_LOG_MAX_BYTES = 16 * 1024


@dataclass
class NotReady:
    """One cause. `summary` is for everybody; `details`, `last_error` and `serial_log` for the
    admin only (they name hosts, quote errors and show what the guest printed)."""

    code: str
    summary: str
    details: list[str] = field(default_factory=list)
    last_error: str = ""
    retry_at: datetime | None = None
    serial_log: list[str] = field(default_factory=list)

    def for_admin(self) -> dict:
        data = asdict(self)
        data["retry_at"] = self.retry_at.isoformat() if self.retry_at else None
        return data

    def for_employee(self) -> dict:
        return {"code": self.code, "summary": self.summary,
                "retry_at": self.retry_at.isoformat() if self.retry_at else None}


def guest_answer_seconds() -> float:
    return settings.VDI_GUEST_ANSWER_SECONDS


def why_not_ready(desktop: Desktop, *, now: datetime | None = None) -> NotReady | None:
    """The reason `desktop` is not ready, or None when it is (running)."""
    now = now or timezone.now()
    pool, state = desktop.pool, desktop.state
    waited = (now - desktop.state_changed_at).total_seconds()
    if state == S.RUNNING:
        return None
    if state == S.DELETED:
        return NotReady("deleted", "This desktop was deleted; a new launch makes another.")
    if not pool.is_enabled and state in (S.QUEUED, S.FAILED, S.STOPPED):
        return NotReady("pool_disabled", "The administrator has switched this pool off for now.")
    if state == S.FAILED:
        return _failed(desktop, now)
    if state == S.QUEUED and pool.is_farm and desktop.host_id is None:
        return _waiting_for_session_host(desktop)
    if desktop.host_id is not None and state in (S.QUEUED, S.CLONING, S.STARTING, S.RECOMPOSING):
        verdict = selectors.host_verdict(host=desktop.host, pool=pool, with_load=False)
        if verdict.code in ("offline", "disabled", "fenced"):
            return NotReady("host_unavailable", "The server your desktop is on is not answering; the broker "
                            "keeps trying.", details=[f"{desktop.host.name}: {verdict.refusal}"])
    if state == S.QUEUED:
        return _queued(desktop, waited)
    if state in (S.CLONING, S.RECOMPOSING):
        what = "built" if state == S.CLONING else "updated to a new image"
        return NotReady(state, f"Your desktop's disk is being {what} ({_ago(waited)}).")
    if state == S.STARTING:
        if waited > guest_answer_seconds():
            return NotReady("guest_not_answering", f"Your desktop was started {_ago(waited)} ago and has not "
                            "answered yet. The broker keeps waiting; if it stays like this, tell your administrator.",
                            details=[f"on {desktop.host.name if desktop.host_id else 'no host yet'}, starting since "
                                     f"{_ago(waited)} (patience {guest_answer_seconds():.0f} s)"],
                            serial_log=serial_log_tail(desktop))
        return NotReady("starting", f"Your desktop is starting ({_ago(waited)}).")
    if state == S.STOPPED:
        return NotReady("powered_off", "Your desktop is powered off; pressing Launch starts it.")
    if state == S.STOPPING:
        return NotReady("stopping", "Your desktop is shutting down; press Launch again in a few seconds.")
    if state == S.DELETING:
        return NotReady("deleting", "Your desktop is being deleted; press Launch for a new one in a few seconds.")
    if state == S.RESTORING:
        return NotReady("restoring", "Your files are being restored from a backup; the desktop starts afterwards.")
    return NotReady(state, f"Your desktop is {desktop.get_state_display().lower()}.")


def _failed(desktop: Desktop, now: datetime) -> NotReady:
    pool = desktop.pool
    if pool.backoff_until and pool.backoff_until > now:
        return _backing_off(pool, now)
    last = (DesktopEvent.objects.filter(desktop=desktop, to_state=S.FAILED).order_by("-created_at", "-id")
            .values_list("from_state", flat=True).first())
    error = desktop.last_error or "no error was recorded"
    if last == S.STARTING:
        return NotReady("guest_not_answering", "Your desktop did not come up when it was started. Press Launch to "
                        "try again; if it fails again, tell your administrator.", last_error=error,
                        serial_log=serial_log_tail(desktop))
    return NotReady("failed", "Getting your desktop ready failed. Press Launch to try again; if it fails again, tell "
                    "your administrator.", last_error=error)


def _backing_off(pool: Pool, now: datetime) -> NotReady:
    retry = pool.backoff_until
    return NotReady(
        "pool_backing_off",
        f"Desktops of this pool failed to start several times in a row, so the broker pauses it until "
        f"{timezone.localtime(retry):%H:%M} before trying again.",
        details=[f"{pool.consecutive_failures} provisioning failures in a row; retries in "
                 f"{_ago((retry - now).total_seconds())}"],
        last_error=pool_last_error(pool), retry_at=retry)


def _waiting_for_session_host(desktop: Desktop) -> NotReady:
    from .services.farm_sessions import session_host_refusal, session_hosts_of

    pool = desktop.pool
    refusals = [(host, session_host_refusal(host, pool)) for host in session_hosts_of(pool)]
    place = selectors.place_in_queue(desktop=desktop) or 1
    details = [f"{host.name}: {refusal[1]}" for host, refusal in refusals if refusal]
    if not refusals or all(refusal for _host, refusal in refusals):
        return NotReady("no_host_capacity", "No server has room for a new session right now; yours starts as soon "
                        "as one has" + (f" (you are number {place} in the queue)." if place > 1 else "."),
                        details=details or ["the farm has no session hosts"])
    if place > 1:
        return NotReady("queued_behind_others", f"{place - 1} session(s) ahead of yours are being placed; you are "
                        f"number {place} in the queue.", details=details)
    return NotReady("waiting_for_placement", "Your session is being placed on a server.", details=details)


def _queued(desktop: Desktop, waited: float) -> NotReady:
    host = desktop.host
    ahead = Desktop.objects.filter(host=host, state__in=(S.QUEUED, S.CLONING, S.STARTING, S.RECOMPOSING),
                                   pk__lt=desktop.pk).count() if host else 0
    if host and ahead >= host.max_parallel_provisioning:
        return NotReady("queued_behind_others", f"{ahead} desktops ahead of yours are being prepared; yours is next "
                        "in line.", details=[f"{host.name} builds at most {host.max_parallel_provisioning} at once; "
                                            f"{ahead} ahead in the queue"])
    if waited > settings.VDI_QUEUED_RETRY_SECONDS:
        return NotReady("no_worker", f"Your desktop has waited {_ago(waited)} for a worker to pick it up; the broker "
                        "sends it again.", details=["no worker took the provisioning task; check that the workers "
                                                    f"{'of ' + host.agent_queue if host and host.task_queue else ''} "
                                                    "run (Celery)"])
    return NotReady("queued", f"Your desktop is queued for a worker ({_ago(waited)}).")


def why_pool_short(pool: Pool, *, now: datetime | None = None) -> list[NotReady]:
    """What keeps `pool` from its target (ready spares, waiting sessions placed); empty when
    nothing does."""
    now = now or timezone.now()
    reasons = []
    if not pool.is_enabled:
        reasons.append(NotReady("pool_disabled", "The pool is switched off: it keeps no spares and takes no launches."))
    if pool.is_farm:
        waiting = list(selectors.waiting_sessions(pool=pool).select_related("pool")[:1])
        if waiting:
            reason = _waiting_for_session_host(waiting[0])
            reason.summary = f"{selectors.waiting_sessions(pool=pool).count()} session(s) wait: {reason.summary}"
            reasons.append(reason)
        return reasons
    if pool.backoff_until and pool.backoff_until > now:
        reasons.append(_backing_off(pool, now))
    version = pool.image.current_version() if pool.image_id else None
    if version is None:
        reasons.append(NotReady("no_image_version", f"The golden image {pool.image} has no published version: "
                                "nothing can be cloned."))
    wanted = selectors.pool_capacity(pool=pool, now=now).spares
    ready = selectors.spares_of(pool=pool).filter(state__in=(S.RUNNING, S.STOPPED)).count()
    if ready < wanted:
        live = selectors.live_count(pool=pool)
        if live >= pool.max_desktops:
            reasons.append(NotReady("pool_full", f"{ready} of {wanted} spares ready: the pool has reached its maximum "
                                    f"of {pool.max_desktops} desktops."))
        else:
            verdicts = selectors.placement_verdicts(pool=pool)
            refused = [f"{v.host.name}: {v.refusal}" for v in verdicts if v.refusal]
            if all(v.refusal for v in verdicts):
                reasons.append(NotReady("no_host_capacity", f"{ready} of {wanted} spares ready: no host has room for "
                                        "another desktop.", details=refused or ["no hypervisor host is configured"]))
            else:
                building = selectors.spares_of(pool=pool).exclude(state__in=(S.RUNNING, S.STOPPED)).count()
                reasons.append(NotReady("building", f"{ready} of {wanted} spares ready, {building} being built.",
                                        details=refused))
    failed = Desktop.objects.filter(pool=pool, state=S.FAILED).count()
    if failed:
        reasons.append(NotReady("failed_desktops", f"{failed} desktop(s) failed.", last_error=pool_last_error(pool)))
    return reasons


def pool_last_error(pool: Pool) -> str:
    """The newest failure message of the pool's desktops."""
    return (DesktopEvent.objects.filter(desktop__pool=pool, to_state=S.FAILED).order_by("-created_at", "-id")
            .values_list("message", flat=True).first() or "")


def serial_log_tail(desktop: Desktop, lines: int = SERIAL_LOG_LINES) -> list[str]:
    """The last lines the guest printed on its serial console, where the log file is readable
    from here (a host on this machine, or a log directory shared with it)."""
    if desktop.host_id is None or not desktop.serial_log_path:
        return []
    path = Path(desktop.serial_log_path)
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - SERIAL_LOG_MAX_BYTES))
            data = handle.read()
    except OSError as exc:
        return [f"(serial log {path} not readable here: {exc.strerror or exc})"]
    text = data.decode("utf-8", errors="replace")
    printable = ["".join(ch for ch in line if ch.isprintable() or ch == "\t") for line in text.splitlines()]
    return [line for line in printable if line.strip()][-lines:]


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"

