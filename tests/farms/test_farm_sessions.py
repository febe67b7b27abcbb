"""Shared sessions end to end on the real parts: the portal's launch and placement, the
session started by this host's agent (Xvnc under the employee's own OS account), and the
console through the gateway with a one-time password per ticket."""

import asyncio
import os
import pwd
import struct
import subprocess

import pytest
from django.conf import settings

from broker import sessionhost
from broker.console.tickets import grant_console
from broker.models import Desktop, DesktopState, Host
from broker.services.assignment import launch_desktop
from broker.session_agent import state_dir_of
from broker.services.desktop_sessions import end_desktop_session
from tests.support.console_client import WebsocketBytes, open_console, session_cookie, vnc_login_as_browser
from tests.support.waiting import wait_for_state, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.sessions]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
S = DesktopState


def console_desktop_name(stack, user, session) -> str:
    """Open the session's console through the gateway as the page does and return the name
    the VNC server announces in its ServerInit (Xvnc's -desktop: the session's name)."""
    cookie = session_cookie(user)
    grant = grant_console(user=user, session_key=cookie, desktop=session, protocol="vnc", origin=stack.base_url)
    assert grant.browser_password is None  # the display's password stays on the server

    async def connect():
        ws = await open_console(stack, session.pk, grant.token, cookie=cookie)
        assert await vnc_login_as_browser(ws) == [1]
        await ws.send(b"\x01")  # ClientInit: shared
        stream = WebsocketBytes(ws)
        width, height = struct.unpack(">HH", await stream.read(4))
        await stream.read(16)
        (length,) = struct.unpack(">I", await stream.read(4))
        name = (await stream.read(length)).decode()
        await ws.close()
        return f"{width}x{height} {name}"

    return asyncio.run(connect())


def account_of(user) -> pwd.struct_passwd:
    return pwd.getpwnam(sessionhost.account_name(prefix=settings.VDI_SESSION_ACCOUNT_PREFIX, user_id=user.pk,
                                                 username=user.get_username()))


def processes_of(uid: int) -> list[str]:
    """The running processes of `uid` (a zombie waiting for init to reap it runs nothing)."""
    names = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
                names.append(open(f"/proc/{pid}/comm").read().strip())
        except OSError:
            pass
    return names


def test_two_employees_each_get_their_own_session_and_reconnect_to_it(live_stack, agent, farm, farm_users):
    alice, bob = farm_users("alice", "bob")
    sessions = [launch_desktop(user=user, pool=farm) for user in (alice, bob)]
    alice_session, bob_session = (wait_for_state(s, S.RUNNING, timeout=60) for s in sessions)

    assert alice_session.host.name == bob_session.host.name == "sessions-1"
    assert alice_session.vnc_port != bob_session.vnc_port
    assert console_desktop_name(live_stack, alice, alice_session) == f"1280x800 {alice_session.name}"
    assert console_desktop_name(live_stack, bob, bob_session) == f"1280x800 {bob_session.name}"

    # Each runs under the employee's own account, with a private home.
    alice_account, bob_account = account_of(alice), account_of(bob)
    assert alice_account.pw_uid != bob_account.pw_uid
    assert oct(os.stat(alice_account.pw_dir).st_mode & 0o777) == "0o700"
    assert {"Xvnc", "icewm", "xterm"} <= set(processes_of(alice_account.pw_uid))

    # Launch again (a closed tab, another day): the same session, the same display.
    again = launch_desktop(user=alice, pool=farm)
    assert again.pk == alice_session.pk
    assert console_desktop_name(live_stack, alice, again) == f"1280x800 {alice_session.name}"

    # Another employee's shell on the host cannot open Alice's display.
    display = alice_session.vnc_port - 5900
    peek = subprocess.run(["runuser", "-u", bob_account.pw_name, "--", "xdpyinfo", "-display", f":{display}"],
                          capture_output=True, text=True, timeout=20)
    assert peek.returncode != 0, peek.stdout[:200]


def test_log_off_ends_every_process_of_the_session(live_stack, agent, farm, farm_users):
    (carol,) = farm_users("carol")
    session = wait_for_state(launch_desktop(user=carol, pool=farm), S.RUNNING, timeout=60)
    uid = account_of(carol).pw_uid
    assert processes_of(uid)

    end_desktop_session(desktop=session, actor=carol, reason="logged off by the user")
    wait_for_state(session, S.DELETED, timeout=30)
    assert processes_of(uid) == []
    # The home stays for the next session.
    assert os.path.isdir(account_of(carol).pw_dir)


def test_a_published_application_runs_alone_and_its_session_ends_with_it(live_stack, agent, farm, farm_users):
    (dave,) = farm_users("dave")
    app = farm.applications.get(name="terminal")
    desktop = wait_for_state(launch_desktop(user=dave, pool=farm), S.RUNNING, timeout=60)
    app_session = wait_for_state(launch_desktop(user=dave, pool=farm, application=app), S.RUNNING, timeout=60)

    assert app_session.pk != desktop.pk and app_session.application == app
    assert app_session.host_id == desktop.host_id  # one user's sessions of a farm share a host
    assert console_desktop_name(live_stack, dave, app_session) == f"1280x800 {app_session.name}"
    app_processes = {info.session_name: info for info in
                     sessionhost.list_sessions(state_dir=state_dir_of(app_session.host))}
    assert app_processes[app_session.name].kind == "app"

    # The user closes the application: its session ends, the desktop session stays.
    xterm_pids = [pid for pid in filter(str.isdigit, os.listdir("/proc"))
                  if _comm(pid) == "xterm" and f"DISPLAY=:{app_session.vnc_port - 5900}".encode()
                  in _environ(pid)]
    assert xterm_pids
    for pid in xterm_pids:
        os.kill(int(pid), 15)
    host = Host.objects.get(name="sessions-1")
    from broker.session_agent import report

    wait_until(lambda: report(host_id=host.pk) and Desktop.objects.get(pk=app_session.pk).state == S.DELETED,
               timeout=30, what="the application's session to end")
    assert Desktop.objects.get(pk=desktop.pk).state == S.RUNNING


def _comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


def _environ(pid):
    try:
        return open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return b""


def test_a_farm_session_left_idle_is_warned_then_logged_off(live_stack, agent, farm, farm_users):
    from websockets.exceptions import ConnectionClosed

    from broker.services.desktop_sessions import enforce_disconnect_timeouts

    farm.console_idle_timeout_minutes = 0.1  # 6 s: the warning comes 1.2 s before
    farm.save()
    (ivan,) = farm_users("ivan")
    session = wait_for_state(launch_desktop(user=ivan, pool=farm), S.RUNNING, timeout=60)
    cookie = session_cookie(ivan)
    grant = grant_console(user=ivan, session_key=cookie, desktop=session, protocol="vnc", origin=live_stack.base_url)

    async def sit_idle():
        ws = await open_console(live_stack, session.pk, grant.token, cookie=cookie)
        await vnc_login_as_browser(ws)
        notices = []
        try:
            while True:
                message = await asyncio.wait_for(ws.recv(), 20)
                if isinstance(message, str) and message.startswith("vdi-notice "):
                    notices.append(message)
        except ConnectionClosed as closed:
            return notices, closed.rcvd.code, closed.rcvd.reason

    notices, code, reason = asyncio.run(sit_idle())
    assert len(notices) == 1 and "your session will be logged off in" in notices[0]
    assert code == 4431 and reason.startswith("Your session was logged off")
    # The gateway records the console's end (and its last input) as it closes: a moment later.
    wait_until(lambda: enforce_disconnect_timeouts() == 1, timeout=15, what="the idle session to be logged off")
    wait_for_state(session, S.DELETED, timeout=30)
    assert processes_of(account_of(ivan).pw_uid) == []


def test_losing_the_entitlement_logs_the_session_off(live_stack, agent, farm, farm_users, employees_group):
    (kim,) = farm_users("kim")
    session = wait_for_state(launch_desktop(user=kim, pool=farm), S.RUNNING, timeout=60)
    kim.groups.remove(employees_group)
    wait_for_state(session, S.DELETED, timeout=30)
    assert processes_of(account_of(kim).pw_uid) == []


def _password_file_digest(session) -> str:
    import hashlib

    from broker.sessionhost import records

    path = os.path.join(records.private_dir(state_dir_of(session.host), session.name), "vncpasswd")
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def test_the_first_console_uses_the_password_the_display_started_with(live_stack, agent, farm, farm_users):
    """A new session's first ticket needs no trip to the agent: the display was started with a
    password kept sealed on the row for it. The ticket takes it once; later tickets, and any
    ticket after it stopped being of use, set a fresh one through the agent."""
    from broker.console.tickets import unseal_first_password
    from broker.sessionhost.vncpasswd import password_file_digest

    erin, frank = farm_users("erin", "frank")
    session = Desktop.objects.get(pk=wait_for_state(launch_desktop(user=erin, pool=farm), S.RUNNING, timeout=60).pk)
    sealed, until = session.sealed_first_console_password, session.first_console_password_until
    assert sealed and until is not None
    first = unseal_first_password(sealed, desktop_id=session.pk, until=until)
    assert len(first) == 8 and first.encode().hex() != sealed  # not kept in the clear
    assert _password_file_digest(session) == password_file_digest(first)

    # The first console: the display's password as it started (the agent did not rewrite it).
    assert console_desktop_name(live_stack, erin, session) == f"1280x800 {session.name}"
    assert _password_file_digest(session) == password_file_digest(first)
    taken = Desktop.objects.get(pk=session.pk)
    assert taken.sealed_first_console_password == "" and taken.first_console_password_until is None

    # The next console: a fresh password, set through the agent.
    assert console_desktop_name(live_stack, erin, taken) == f"1280x800 {session.name}"
    assert _password_file_digest(session) != password_file_digest(first)

    # A first password past its time is not used (the agent has replaced it on the display).
    other = Desktop.objects.get(pk=wait_for_state(launch_desktop(user=frank, pool=farm), S.RUNNING, timeout=60).pk)
    started_with = _password_file_digest(other)
    Desktop.objects.filter(pk=other.pk).update(first_console_password_until=until.replace(year=2000))
    stale = Desktop.objects.get(pk=other.pk)
    assert console_desktop_name(live_stack, frank, stale) == f"1280x800 {other.name}"
    assert _password_file_digest(other) != started_with
