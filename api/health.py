"""/healthz: the process answers. /readyz: what this portal needs to do its work, each part
checked and named: the database, Redis (the Celery broker), Celery workers (one consuming the
central queue, and the agent of every enabled host that has its own), and every enabled host's
last check. 200 when all pass, 503 naming the failing parts; the body has every check."""

import time

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from broker.models import Host


@never_cache
@require_GET
def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain")


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "answers"


def _redis_url(url: str) -> str:
    # Celery's spelling of a unix socket (config/redis_urls.py) back to redis-py's.
    return "unix://" + url[len("redis+socket://"):] if url.startswith("redis+socket://") else url


def check_redis() -> str:
    import redis

    timeout = settings.VDI_READYZ_TIMEOUT_SECONDS
    client = redis.Redis.from_url(_redis_url(settings.CELERY_BROKER_URL), socket_connect_timeout=timeout,
                                  socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return "answers"


class CheckFailed(Exception):
    pass


def check_workers(hosts) -> dict[str, str]:
    """{check name: detail}; raises CheckFailed naming the missing workers."""
    from config.celery import app

    timeout = settings.VDI_READYZ_TIMEOUT_SECONDS
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    consumers: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            consumers.setdefault(queue["name"], []).append(worker)
    if not replies:
        raise CheckFailed(f"no Celery worker answered within {timeout:g} s")
    wanted = {settings.CELERY_TASK_DEFAULT_QUEUE: "central workers"}
    for host in hosts:
        if host.task_queue:
            wanted[host.task_queue] = f"agent of host {host.name}"
    missing = [f"{who} (queue {queue})" for queue, who in wanted.items() if queue not in consumers]
    if missing:
        raise CheckFailed("no worker consumes the queue of: " + ", ".join(missing))
    return f"{len(replies)} worker(s) answered: " + ", ".join(sorted(replies))


def readiness() -> tuple[bool, dict]:
    checks: dict[str, dict] = {}

    def run(name, check, *args):
        started = time.monotonic()
        try:
            detail, ok = check(*args), True
        except Exception as exc:  # a check's failure is its answer
            detail, ok = f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, CheckFailed) else str(exc), False
        checks[name] = {"ok": ok, "detail": detail, "ms": round(1000 * (time.monotonic() - started), 1)}
        return ok

    hosts = []
    if run("database", check_database):
        hosts = list(Host.objects.filter(is_enabled=True).order_by("name"))
    redis_ok = run("redis", check_redis)
    if redis_ok:
        run("workers", check_workers, hosts)
    else:
        checks["workers"] = {"ok": False, "detail": "not asked: Redis (the Celery broker) does not answer", "ms": 0}
    for host in hosts:
        if host.is_online:
            detail = f"online (checked {host.last_checked_at:%Y-%m-%d %H:%M:%S})" if host.last_checked_at \
                else "not checked yet"
            checks[f"host:{host.name}"] = {"ok": True, "detail": detail, "ms": 0}
        else:
            since = f" since {host.offline_since:%Y-%m-%d %H:%M:%S}" if host.offline_since else ""
            checks[f"host:{host.name}"] = {"ok": False, "detail": f"offline{since}: {host.last_error}"[:500],
                                           "ms": 0}
    failing = [name for name, check in checks.items() if not check["ok"]]
    return not failing, {"status": "ready" if not failing else "not ready", "failing": failing, "checks": checks}


@never_cache
@require_GET
def readyz(request):
    """Anyone gets the verdict; the checks' details (host names, errors) only the addresses and
    token allowed to read /metrics."""
    from .access import may_scrape

    ready, body = readiness()
    if not may_scrape(request):
        body = {"status": body["status"]}
    return JsonResponse(body, status=200 if ready else 503)
