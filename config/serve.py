"""How every process that serves consoles runs uvicorn, in one place:

    python -m config.serve config.asgi:application --host 127.0.0.1 --port 8000
    python -m config.serve config.gateway_asgi:application --host 0.0.0.0 --port 8443

Any other uvicorn option may follow (--ssl-keyfile, ...). Added here:
- `--ws broker.console.uvicorn_protocol:ConsoleWebSocketProtocol`: uvicorn's websockets-sansio
  protocol, whose send waits while the socket's write buffer is full (the console relay's
  backpressure; daphne has none), with a binary send path that copies no screen data.
- `--ws-per-message-deflate false`: screen updates are not worth compressing twice (RFB and
  SPICE have their own encodings; deflate costs CPU and latency on every frame).
- `--no-access-log`: the console URL carries the ticket (and logs are scrubbed anyway).
- DATABASE_POOL_MAX_SIZE=24 unless set: on PostgreSQL, a pool of connections per process, two
  thirds for HTTP requests at once and a third for the websockets' database threads
  (config/settings.py).
- What one connection may cost (LIMIT_OPTIONS): a request head must arrive within 10 s
  (config/uvicorn_http.py; uvicorn alone waits for ever) and fit in 16 KiB; idle keep-alive
  connections close after 5 s; a websocket message from a browser is at most 1 MiB (consoles
  send keystrokes and mouse moves); a websocket that does not answer pings for 20 s (VDI_WS_PING_SECONDS) is closed;
  at most VDI_MAX_CONNECTIONS (4096) connections at once, then HTTP answers 503.

- Proxy headers (X-Forwarded-For, X-Forwarded-Proto, X-Request-ID) are believed only from the
  addresses in VDI_FORWARDED_ALLOW_IPS (a reverse proxy's), and from nobody when it is unset.
  The applications do that themselves (config/forwarded.py: the request id's trust needs the
  proxy's address, which uvicorn's own proxy middleware overwrites), so uvicorn's is always
  off here. uvicorn alone believes 127.0.0.1, where anyone on the host could then pick the
  address the login throttle sees. Options given here come after the command line's and win.

make run (scripts/run.sh), the tests' live stack and bench/console_proxy.py all start it so.
"""

import os
import sys

from uvicorn.main import main

CONSOLE_OPTIONS = [
    "--ws", "broker.console.uvicorn_protocol:ConsoleWebSocketProtocol",
    "--ws-per-message-deflate", "false",
    "--no-access-log",
]

LIMIT_OPTIONS = [
    "--http", "config.uvicorn_http:H11ProtocolWithHeadTimeout",
    "--h11-max-incomplete-event-size", "16384",
    "--timeout-keep-alive", "5",
    "--ws-max-size", str(1024 * 1024),
    # A browser that vanished without a word (laptop closed, network gone) is noticed by its
    # unanswered pings; its console then closes and its session row with it.
    "--ws-ping-interval", os.environ.get("VDI_WS_PING_SECONDS", "20"),
    "--ws-ping-timeout", os.environ.get("VDI_WS_PING_SECONDS", "20"),
    "--limit-concurrency", os.environ.get("VDI_MAX_CONNECTIONS", "4096"),
]


def proxy_options() -> list[str]:
    # VDI_FORWARDED_ALLOW_IPS is applied by the application (config/forwarded.py), not uvicorn.
    return ["--no-proxy-headers", "--forwarded-allow-ips", ""]


def uvicorn_argv(python: str, app: str, *options: str) -> list[str]:
    """The command line that serves `app` as this module does, for a subprocess."""
    return [python, "-m", "config.serve", app, *options]


if __name__ == "__main__":
    # One process, no fork after Django starts: it may pool its PostgreSQL connections.
    os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "24")
    main(sys.argv[1:] + CONSOLE_OPTIONS + LIMIT_OPTIONS + proxy_options(), prog_name="uvicorn")
