"""One REDIS_URL for everything that talks to Redis.

redis-py (the channel layer, channels_redis) reads `redis://`, `rediss://` (TLS) and
`unix://[:password]@/path/redis.sock?db=N`; Celery's kombu reads the same TCP URLs but spells a
unix socket `redis+socket://[:password]@/path/redis.sock?virtual_host=N`.
"""

from urllib.parse import parse_qs, urlsplit


def celery_broker_url(redis_url: str) -> str:
    if not redis_url.startswith("unix://"):
        return redis_url
    parts = urlsplit(redis_url)
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.netloc}{parts.path}?virtual_host={db}"
