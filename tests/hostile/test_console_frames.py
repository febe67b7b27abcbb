"""What a console websocket's other ends may send, as parsed by the gateway: the browser's query
string, cookie, Origin and path before the socket opens; its frames before and during the RFB
and SPICE handshakes; and a desktop's VNC server answering anything at all. Each ends in a
console, a close code the page knows, or a refusal; never an exception out of the gateway, a
console row left open, or a byte of the browser's at the desktop before its handshake held."""

import asyncio
import os
import struct
from urllib.parse import unquote

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from hypothesis import example, given
from hypothesis import strategies as st

from broker.console import rfb, spice
from broker.console.close_codes import CloseCode
from broker.console.tickets import issue_console_ticket
from broker.models import ConsoleSession
from config.asgi import application
from tests.hostile.support import hostile
from tests.support.console_client import session_cookie

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

KNOWN_CLOSE_CODES = {int(code) for code in CloseCode} | {1000}
ORIGIN, HOST = "http://127.0.0.1", b"127.0.0.1"


# -- the parsers alone ---------------------------------------------------------------------------

@hostile(max_examples=300)
@given(data=st.one_of(st.binary(max_size=40), st.builds(
    lambda head, rest: head + rest,
    st.sampled_from([b"REDQ", b"RED", b"REDQ\x02\x00\x00\x00", spice.HEADER.pack(b"REDQ", 2, 2, 6)]),
    st.binary(max_size=30))))
def test_a_spice_link_message_is_a_channel_more_bytes_or_not_spice(data):
    try:
        channel = spice.link_channel_type(data)
    except spice.NotSpice:
        return
    if channel is None:
        assert len(data) < spice.BYTES_NEEDED and b"REDQ".startswith(data[:4])
    else:
        magic, major, _minor, size = spice.HEADER.unpack_from(data)
        assert (magic, major) == (b"REDQ", 2) and 6 <= size <= spice.MAX_LINK_MESS and 0 <= channel <= 255


@hostile(max_examples=200)
@given(line=st.one_of(st.binary(min_size=12, max_size=12),
                      st.builds(lambda a, b: b"RFB " + a + b"." + b + b"\n",
                                st.binary(min_size=3, max_size=3), st.binary(min_size=3, max_size=3))))
def test_an_rfb_version_line_is_a_known_version_or_refused(line):
    try:
        assert rfb._parse_version(line) in (3, 7, 8)
    except rfb.HandshakeFailed:
        pass


async def _serve_bytes_once(data: bytes):
    """A hostile desktop: a console port that sends `data` and hangs up."""
    async def answer(reader, writer):
        writer.write(data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


desktop_replies = st.lists(st.one_of(
    st.sampled_from([b"RFB 003.008\n", b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 004.000\n", b"\x01\x02",
                     b"\x01\x01", b"\x00", b"\x00\x00\x00\x00", b"\x00\x00\x00\x02", b"\x00\x00\x00\x01",
                     b"\xff\xff\xff\xff", os.urandom(16), struct.pack(">I", 1) + struct.pack(">I", 2**31) + b"x"]),
    st.binary(max_size=24)), max_size=6).map(b"".join)


@hostile(max_examples=120)
@given(reply=desktop_replies)
@example(reply=b"RFB 003.008\n\x00\xff\xff\xff\xffreason")  # refusal whose reason length lies
@example(reply=b"RFB 003.003\n\x00\x00\x00\x02" + b"c" * 16 + b"\x00\x00\x00\x00")  # 3.3 with VNC auth: logged in
def test_the_gateway_logs_in_to_any_desktop_or_says_why_not(reply):
    async def attempt():
        server, port = await _serve_bytes_once(reply)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                await asyncio.wait_for(rfb.authenticate_to_desktop(reader, writer, "pass1234"), 5)
                return None
            except rfb.HandshakeFailed as failed:
                return str(failed)
            finally:
                writer.close()
        finally:
            server.close()

    reason = asyncio.run(attempt())
    # A sentence for the page (HandshakeFailed), never a struct or index error, never the password.
    assert reason is None or (reason.startswith(("The desktop", "Not a VNC console")) and "pass1234" not in reason)


@hostile(max_examples=200)
@given(chunks=st.lists(st.one_of(st.binary(max_size=14), st.sampled_from(
    [b"RFB 003.008\n", b"RFB 003.003\n", b"RFB 003.007\n", b"\x01", b"\x02", b"RFB 003.", b"008\n"])), max_size=5))
def test_the_browser_side_handshake_ends_in_none_security_or_a_refusal(chunks):
    sent = []

    async def send_bytes(data):
        sent.append(data)

    async def attempt():
        queue = list(chunks)

        async def receive_message():
            if not queue:
                raise EOFError("the browser left")
            return queue.pop(0)

        browser = rfb.BrowserBytes(receive_message)
        try:
            await rfb.offer_no_authentication(browser, send_bytes)
            return "open"
        except rfb.HandshakeFailed:
            return "refused"
        except EOFError:
            return "left"

    outcome = asyncio.run(attempt())
    stream = b"".join(chunks)
    if outcome == "open":  # only after a version line and (3.7/3.8) the "None" it was offered
        assert stream[:8] == b"RFB 003." and (stream[11:12] == b"\n")
        assert rfb._parse_version(stream[:12]) == 3 or stream[12:13] == bytes([rfb.SECURITY_NONE])
    assert sent[0] == rfb.VERSION_38 and all(b"\x02" not in s[:2] for s in sent[1:2])  # never offers VNC auth


# -- the gateway, in process, against a desktop that speaks RFB and echoes -----------------------------

def _headers(cookie=None, origin=ORIGIN):
    headers = [(b"host", HOST)]
    if origin is not None:
        headers.append((b"origin", origin.encode("utf-8") if isinstance(origin, str) else origin))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("utf-8") if isinstance(cookie, str) else cookie))
    return headers


async def _run_console(path, headers, frames, *, subprotocols=("binary",), wait_for: bytes = b""):
    """Open `path`, send `frames` (bytes or text) if it opens, leave; return what the gateway sent.
    Any exception of the gateway's comes out of wait()."""
    raw_path, _, query = path.partition("?")
    scope = {"type": "websocket", "path": unquote(raw_path), "raw_path": raw_path.encode("latin-1", "replace"),
             "query_string": query.encode("utf-8", "surrogatepass"), "headers": headers, "scheme": "ws",
             "subprotocols": list(subprotocols), "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "websocket.connect"})
    first = await asyncio.wait_for(communicator.output_queue.get(), 10)
    connected = first["type"] == "websocket.accept"
    sent = [first]
    if connected:
        for frame in frames:
            if isinstance(frame, bytes):
                await communicator.send_input({"type": "websocket.receive", "bytes": frame})
            else:
                await communicator.send_input({"type": "websocket.receive", "text": frame})
        # What the gateway answers, until it closes or (at most a few seconds) `wait_for` came back.
        deadline = asyncio.get_running_loop().time() + (5 if wait_for else 0.1)
        while asyncio.get_running_loop().time() < deadline:
            if communicator.future.done():
                break
            try:  # (receive_output's own timeout would cancel the gateway)
                sent.append(await asyncio.wait_for(communicator.output_queue.get(), 0.1))
            except asyncio.TimeoutError:
                continue
            echoed = b"".join(m.get("bytes") or b"" for m in sent if m["type"] == "websocket.send")
            if sent[-1]["type"] == "websocket.close" or (wait_for and wait_for in echoed):
                break
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait(timeout=15)
    while not communicator.output_queue.empty():
        sent.append(communicator.output_queue.get_nowait())
    return connected, sent


def _close_codes(sent):
    return [message.get("code") for message in sent if message["type"] == "websocket.close"]


@pytest.fixture
def plain_echo_server():
    """A SPICE channel's stand-in: echoes from the first byte."""
    from tests.support.stream_server import StreamServer

    with StreamServer("echo", rfb=False) as server:
        yield server


@pytest.fixture
def console(transactional_db, pool, employee, host, echo_server, plain_echo_server):
    from tests.support.desktops import running_desktop_on

    desktop = running_desktop_on(echo_server, spice_server=plain_echo_server, pool=pool, user=employee,
                                 name="vditest-hostile")
    cookie = session_cookie(employee)

    def ticket(protocol="vnc"):
        server = echo_server if protocol == "vnc" else plain_echo_server
        return issue_console_ticket(user=employee, session_key=cookie, desktop=desktop, protocol=protocol,
                                    origin=ORIGIN, port=server.port, console_password=echo_server.vnc_password)

    return desktop, f"{settings.SESSION_COOKIE_NAME}={cookie}", ticket


query_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@hostile(max_examples=60)
@given(query=st.one_of(query_text, st.builds(lambda t: f"ticket={t}", query_text),
                       st.sampled_from(["ticket=", "ticket=%00", "ticket=" + "A" * 5000, "ticket=a&ticket=b",
                                        "ticket=%ff%fe", "%%%", "ticket[]=x"])),
       cookie=st.one_of(st.none(), st.text(max_size=40), st.just("own"), st.just("own-twice")),
       origin=st.one_of(st.none(), st.just(ORIGIN), st.sampled_from(["null", "http://evil.example", "HTTP://127.0.0.1",
                                                                     "http://127.0.0.1.evil.example", "\x00"]),
                        st.text(max_size=20)),
       desktop_part=st.one_of(st.just("own"), st.integers(0, 10**30).map(str),
                              st.sampled_from(["-1", "1e3", "٣", "0x1", "%31", "1/../2"])))
@example(query="ticket=" + "A" * 5000, cookie="own", origin=ORIGIN, desktop_part="own")
def test_no_query_cookie_origin_or_path_crashes_the_gateway(console, query, cookie, origin, desktop_part):
    desktop, own_cookie, _ticket = console
    cookie = {"own": own_cookie, "own-twice": f"{own_cookie}; {own_cookie}x"}.get(cookie, cookie)
    path = f"/ws/console/{desktop.pk if desktop_part == 'own' else desktop_part}/?{query}"
    connected, sent = asyncio.run(_run_console(path, _headers(cookie, origin), [b"RFB 003.008\n", b"\x01"]))
    # None of these is a ticket: nothing opened, every close a code the page knows.
    assert all(code in KNOWN_CLOSE_CODES or code is None for code in _close_codes(sent)), sent
    assert not [m for m in sent if m["type"] == "websocket.send"], sent  # not a byte of a console
    assert not ConsoleSession.objects.filter(closed_at__isnull=True).exists()


frames = st.lists(st.one_of(
    st.sampled_from([b"RFB 003.008\n", b"RFB 003.003\n", b"RFB 003.007\n", b"\x01", b"\x02", b"\x00",
                     b"RFB 003.", b"008\n", "vdi-ping 1", "vdi-ping " + "x" * 100, "hello", b""]),
    st.binary(max_size=20), st.text(max_size=10)), max_size=6)


@hostile(max_examples=25)
@given(frames=frames)
@example(frames=[b"RFB 003.008\n", b"\x01", b"typed after login"])  # a good opening: the echo comes back
@example(frames=[b"RFB 003.008\n", b"\x02", b"sneaked past"])  # the browser picks a type it was not offered
def test_frames_before_and_during_the_vnc_handshake(console, frames):
    desktop, cookie, ticket = console
    expect = b"typed after login" if any(f == b"typed after login" for f in frames) else b""
    connected, sent = asyncio.run(_run_console(f"/ws/console/{desktop.pk}/?ticket={ticket()}", _headers(cookie),
                                               frames, wait_for=expect))
    assert connected
    codes = _close_codes(sent)
    assert all(code in KNOWN_CLOSE_CODES for code in codes), sent
    stream = b"".join(f for f in frames if isinstance(f, bytes))
    handshake_held = stream.startswith(b"RFB 003.008\n\x01") or stream.startswith(b"RFB 003.007\n\x01") or (
        stream[:8] == b"RFB 003." and stream[11:12] == b"\n" and rfb._parse_version(stream[:12]) == 3)
    echoed = b"".join(m.get("bytes") or b"" for m in sent if m["type"] == "websocket.send")
    if not handshake_held:  # nothing of the browser's reached the desktop to be echoed
        assert b"sneaked past" not in echoed
        assert not codes or codes[-1] in (CloseCode.TICKET_INVALID,), (frames, codes)
    elif b"typed after login" in stream:
        assert b"typed after login" in echoed
    assert not ConsoleSession.objects.filter(closed_at__isnull=True).exists()


def link_message(channel: int, *, size: int = 6) -> bytes:
    return spice.HEADER.pack(spice.MAGIC, spice.MAJOR_VERSION, 2, size) + spice.LINK_MESS_PREFIX.pack(0, channel, 0)


@hostile(max_examples=25)
@given(frames=st.lists(st.one_of(st.binary(max_size=24), st.sampled_from(
    [link_message(1), link_message(2), link_message(0), link_message(255), link_message(1, size=10**6),
     b"REDQ", b"REDQ\x02\x00\x00\x00", "vdi-ping 1"])), max_size=4))
@example(frames=[link_message(1), b"after the link"])
@example(frames=[link_message(3)])  # not the main channel first: refused
def test_frames_before_and_during_the_spice_link(console, frames):
    desktop, cookie, ticket = console
    connected, sent = asyncio.run(_run_console(f"/ws/console/{desktop.pk}/?ticket={ticket('spice')}",
                                               _headers(cookie), frames,
                                               wait_for=b"after the link" if b"after the link" in frames else b""))
    assert connected
    codes = _close_codes(sent)
    assert all(code in KNOWN_CLOSE_CODES for code in codes), sent
    stream = b"".join(f for f in frames if isinstance(f, bytes))
    try:
        channel = spice.link_channel_type(stream)
    except spice.NotSpice:
        channel = "not spice"
    echoed = b"".join(m.get("bytes") or b"" for m in sent if m["type"] == "websocket.send")
    if channel != spice.CHANNEL_MAIN:  # the first socket of a ticket must be the main channel
        assert echoed == b"", (frames, echoed)
        assert not codes or codes[-1] == CloseCode.SPICE_CHANNEL_REFUSED, (frames, codes)
    elif b"after the link" in frames:
        assert echoed.endswith(b"after the link")
    assert not ConsoleSession.objects.filter(closed_at__isnull=True).exists()


# -- websockify's plugins (a stock websockify as the gateway tier) -----------------------------------------

@hostile(max_examples=25)
@given(token=st.one_of(st.text(max_size=40), st.sampled_from(["", "A" * 200, "real"])),
       cookie=st.one_of(st.none(), st.text(max_size=30), st.just("own")),
       origin=st.one_of(st.none(), st.just(ORIGIN), st.text(max_size=20)))
@example(token="real", cookie="own", origin=ORIGIN)  # the one that is let through
def test_websockify_plugins_refuse_or_admit_with_a_403_never_an_error(console, token, cookie, origin):
    from websockify.auth_plugins import AuthenticationError

    from broker.console.websockify_plugin import BrokerLogin, BrokerTickets

    desktop, own_cookie, ticket = console
    token = ticket() if token == "real" else token
    headers = {"Host": "127.0.0.1"}
    if cookie is not None:
        headers["Cookie"] = own_cookie if cookie == "own" else cookie
    if origin is not None:
        headers["Origin"] = origin
    headers = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}  # as http.server hands them
    host, port = BrokerTickets(None).lookup(token)
    try:
        BrokerLogin().authenticate(headers, host, port)
    except AuthenticationError as refused:
        assert refused.code == 403 and str(refused.msg)[:4] in {str(int(c)) for c in CloseCode}, refused.msg
        return
    assert headers.get("Origin") == ORIGIN and cookie == "own" and port == desktop.vnc_port  # only the real one
