"""Where the ASGI side (console gateway, launch progress pages) does its database work: in a
pool of threads of its own, PORTAL_DATABASE_THREADS of them (config/settings.py: the pooled
PostgreSQL connections that HTTP requests do not take).

Not Channels' default, the process's one shared thread, where every page's and every console's
reads wait for all the others' (under bench/logon_storm.py's 1,000 users within 60 s the
progress page took 23.6 s at p50 on it); and not the event loop's default executor either
(min(32, cores + 4) threads: six on two cores, shared with whatever else the loop runs there).
More threads than their share of the pooled connections would only wait for the pool.
"""

from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async
from django.conf import settings

# Without a pool (SQLite, or DATABASE_POOL_MAX_SIZE unset) each thread keeps a connection of its own.
_THREADS = ThreadPoolExecutor(max_workers=settings.PORTAL_DATABASE_THREADS, thread_name_prefix="asgi-database")


def in_a_database_thread(function):
    """`function` as an awaitable run in one of the database threads (any of them: the work
    of one console or one page needs no particular thread)."""
    return database_sync_to_async(function, thread_sensitive=False, executor=_THREADS)
