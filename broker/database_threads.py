"""Where the ASGI side (console gateway, launch progress pages) does its database work: in a
pool of threads of its own, as many as the process has pooled PostgreSQL connections.

Not Channels' default (the process's one shared thread: every page and console waits for all
the others) and not the event loop's default executor (min(32, cores + 4) threads: six on two
cores, shared with everything else that runs in it). In bench/logon_storm.py, 1,000 users
within 60 s queued there: the launch progress page waited 23 s (p50) for its first reads while
the HTTP views, each in a thread of its own, answered in 2 s, and console tickets expired
before their websocket's checks got a thread.
"""

from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async
from django.conf import settings

# More threads than connections would only wait for the pool; without a pool (SQLite, or
# DATABASE_POOL_MAX_SIZE unset) each thread keeps a connection of its own.
_THREADS = ThreadPoolExecutor(max_workers=max(settings.DATABASE_POOL_MAX_SIZE, 10),
                              thread_name_prefix="asgi-database")


def in_a_database_thread(function):
    """`function` as an awaitable run in one of the database threads (any of them: the work
    of one console or one page needs no particular thread)."""
    return database_sync_to_async(function, thread_sensitive=False, executor=_THREADS)
