import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("vdi")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _survive_a_redis_restart():
    """kombu 5.7's Redis transport crashes the worker ("Unrecoverable error: AttributeError
    'NoneType' object has no attribute 'hostname'") when Redis goes away while a task is
    unacknowledged: closing the lost connection tries to put the task back through a
    connection it has already released. Make that the connection error it is, which kombu
    ignores on close, so the worker reconnects when Redis is back instead of exiting (the task
    itself is redelivered by the broker's periodic pass: broker/services/hosts.py). The same trace
    as celery/kombu#582, still open in 5.7."""
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    connparams = kombu_redis.Channel._connparams

    def _connparams_unless_released(self, asynchronous=False):
        if self.connection.client is None:
            raise RedisConnectionError("the connection to Redis was lost and released")
        return connparams(self, asynchronous)

    kombu_redis.Channel._connparams = _connparams_unless_released


_survive_a_redis_restart()


# Logs (config/logs.py): the worker writes the same lines as the portal, and each task's lines
# carry the request id (and user) of the request that sent it, from the task's headers.
from celery.signals import setup_logging  # noqa: E402
from django_structlog.celery.steps import DjangoStructLogInitStep  # noqa: E402

app.steps["worker"].add(DjangoStructLogInitStep)


@setup_logging.connect
def _log_like_the_portal(**kwargs):
    """Answering this signal keeps Celery from installing its own handlers on the root logger."""
    from config.logs import configure_process_logging

    configure_process_logging()
