"""What a client may cost the portal: no open websocket without a login, no socket held by a
request that never completes, no memory for pongs a client never reads, no huge bodies."""

import asyncio
import socket
import time
from base64 import b64encode
from os import urandom
from pathlib import Path

import pytest
from django.conf import settings
from websockets.exceptions import InvalidStatus

from tests.support.console_client import open_console, portal_ticket, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def seconds_until_closed(port: int, payload: bytes, limit: float = 60) -> float:
    """Send `payload` and read whatever comes back until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(limit)
        sock.sendall(payload)
        started = time.monotonic()
        while sock.recv(65536):
            pass
        return time.monotonic() - started


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455): FIN, short length, a zero mask (the payload stays as it is)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def test_a_client_without_a_login_gets_no_open_websocket(live_stack, echo_desktop, echo_server):
    for cookie in (None, "not-a-session-" + "x" * 20):
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(open_console(live_stack, echo_desktop.pk, "any-ticket", cookie=cookie))
        assert refused.value.response.status_code == 403
    assert echo_server.connections == 0


def test_a_half_sent_request_is_closed_in_bounded_time(live_stack):
    assert seconds_until_closed(live_stack.port, b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n") < 20


def test_an_oversized_websocket_url_is_closed_in_bounded_time(live_stack):
    request = (b"GET /ws/console/1/?ticket=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: " + b64encode(urandom(16)) + b"\r\n\r\n")
    assert seconds_until_closed(live_stack.port, request) < 20
    assert seconds_until_closed(live_stack.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n") < 20


def response_status_line(port: int, request: bytes, then: bytes = b"") -> bytes:
    """Send `request`, then as much of `then` as the server takes, and return its status line.

    The server may answer and close while the body is still arriving (that is the point of
    the cap): a refused send is expected, the answer is read from what did arrive."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(request)
        try:
            for offset in range(0, len(then), 16384):
                sock.sendall(then[offset:offset + 16384])
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sock.makefile("rb").readline()


def test_a_request_body_over_the_limit_is_refused(live_stack):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    declared = (f"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {limit + 1}\r\n\r\n").encode()
    assert response_status_line(live_stack.port, declared).startswith(b"HTTP/1.1 413")

    streamed = (b"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
    body = chunk * (limit // 0x4000 + 2)  # a little over the limit, never finished
    assert response_status_line(live_stack.port, streamed, then=body).startswith(b"HTTP/1.1 413")


def test_a_flood_of_pings_from_a_client_that_never_reads_costs_the_portal_little(live_stack, echo_desktop,
                                                                                 echo_server, employee):
    cookie = session_cookie(employee)
    ticket = portal_ticket(live_stack, employee, echo_desktop, cookie, echo_server)
    handshake = (f"GET /ws/console/{echo_desktop.pk}/?ticket={ticket} HTTP/1.1\r\nHost: 127.0.0.1:{live_stack.port}\r\n"
                 f"Origin: {live_stack.base_url}\r\nCookie: {settings.SESSION_COOKIE_NAME}={cookie}\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Key: {b64encode(urandom(16)).decode()}\r\n\r\n").encode()
    pings = b"".join(masked_frame(0x9, b"p" * 125) for _ in range(1000))  # 131 kB of pings
    text_pings = b"".join(masked_frame(0x1, b"vdi-ping 1") for _ in range(1000))
    portal = live_stack.portal.pid

    with socket.create_connection(("127.0.0.1", live_stack.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(handshake)
        assert sock.recv(12) == b"HTTP/1.1 101"  # open; from here on the client never reads
        time.sleep(1)
        before = rss_bytes(portal)
        sock.settimeout(5)
        sent = 0
        try:
            for _ in range(460):  # pongs for these would be 60 MB
                sock.sendall(pings)
                sent += len(pings)
            sock.sendall(text_pings)  # the page's pings: the portal answers a few, then it waits for us
        except socket.timeout:
            pass  # the portal stopped reading us: fine too
        time.sleep(1)
        grown = rss_bytes(portal) - before

    print(f"sent {sent} bytes of pings, portal grew by {grown} bytes")
    assert sent > 1_000_000  # the portal read the flood, it was not just refused
    assert grown < 16_000_000
