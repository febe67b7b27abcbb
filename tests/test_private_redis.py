"""`make run`'s Redis (Celery's broker and the channel layer) is its own: a unix socket in a
0700 directory and a password, so no other local user can read or inject broker messages."""

import asyncio
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from kombu import Connection

from config.redis_urls import celery_broker_url

SCRIPT = Path(settings.BASE_DIR) / "scripts" / "start-private-redis.sh"


@pytest.fixture
def private_redis(tmp_path):
    """The demo's Redis, started as scripts/run.sh starts it; yields (directory, REDIS_URL)."""
    directory = tmp_path / "redis"
    url = subprocess.run([str(SCRIPT), str(directory)], capture_output=True, text=True, check=True,
                         timeout=60).stdout.strip()
    yield directory, url
    os.kill(int((directory / "redis.pid").read_text()), signal.SIGTERM)


def others_may(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & 0o077


def test_the_socket_is_private_and_wants_the_password(private_redis):
    directory, url = private_redis
    socket_path = directory / "redis.sock"

    assert url.startswith("unix://:") and url.endswith(f"@{socket_path}?db=0")
    assert (others_may(directory), others_may(socket_path), others_may(directory / "password")) == (0, 0, 0)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=str(socket_path)).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=str(socket_path), password="guessed").ping()
    assert redis.Redis.from_url(url).ping()


def test_another_local_user_cannot_reach_the_socket(private_redis):
    directory, _url = private_redis
    probe = f"import socket; socket.socket(socket.AF_UNIX).connect({str(directory / 'redis.sock')!r})"
    attempt = subprocess.run(["/usr/bin/python3", "-c", probe], user="nobody", capture_output=True, text=True,
                             timeout=30)
    assert attempt.returncode != 0 and "PermissionError" in attempt.stderr


def test_celery_and_the_channel_layer_work_through_it(private_redis):
    _directory, url = private_redis

    with Connection(celery_broker_url(url)) as connection:
        queue = connection.SimpleQueue("vditest-private-redis")
        queue.put({"task": "reaches the worker"})
        assert queue.get(timeout=5).payload == {"task": "reaches the worker"}
        queue.close()

    async def close_message_round_trip():
        layer = RedisChannelLayer(hosts=[{"address": url}], prefix="vditest")
        channel = await layer.new_channel()
        await layer.group_add("console.user.1", channel)
        await layer.group_send("console.user.1", {"type": "console.terminate", "code": 4401, "reason": "r"})
        message = await asyncio.wait_for(layer.receive(channel), 5)
        await layer.flush()
        await layer.close_pools()
        return message

    assert asyncio.run(close_message_round_trip()) == {"type": "console.terminate", "code": 4401, "reason": "r"}
