"""Hypervisor hosts with their own agent: every operation on a host goes to that host's queue,
where the agent on the host runs it with its local libvirt; a task for host B never runs in
host A's worker, nor in the central workers."""

import asyncio
import os
import re
import struct

import pytest

from broker.console.tickets import grant_console
from broker.models import Desktop, DesktopState, Host
from broker.services.assignment import launch_desktop
from broker.services.desktop_sessions import end_desktop_session
from tests.support.console_client import WebsocketBytes, open_console, session_cookie, vnc_login_as_browser
from tests.support.waiting import wait_for_state

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.libvirt]
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
TASK_DONE = re.compile(r"Task (broker\.tasks\.\w+)\[[0-9a-f-]+\] succeeded")


def tasks_run_by(stack, log_name: str) -> list[str]:
    path = stack.log_dir / f"{log_name}.log"
    return TASK_DONE.findall(path.read_text()) if path.exists() else []


@pytest.fixture
def two_agent_hosts(live_stack, host):
    """Host A (the conftest's "local") and host B, each with an agent of its own. Both reach
    this machine's libvirtd (a second daemon is not needed to show where tasks run)."""
    Host.objects.filter(pk=host.pk).update(has_own_agent=True)
    other = Host.objects.create(name="local-b", libvirt_uri="qemu:///system", domain_type="qemu",
                                has_own_agent=True)
    for each in (Host.objects.get(pk=host.pk), other):
        if not (live_stack.log_dir / f"agent-{each.name}.log").exists():
            live_stack.start_agent(each)
    return Host.objects.get(pk=host.pk), other


def test_a_hosts_tasks_run_in_its_own_agent_and_its_console_is_granted_there(live_stack, two_agent_hosts, pool,
                                                                              employee):
    host_a, host_b = two_agent_hosts
    pool.host = host_b  # pinned: every desktop of the pool goes to B
    pool.save()
    before = {name: tasks_run_by(live_stack, name) for name in ("worker", "agent-local", "agent-local-b")}

    desktop = wait_for_state(launch_desktop(user=employee, pool=pool), DesktopState.RUNNING, timeout=120)
    assert desktop.host_id == host_b.pk

    # The console's one-time password is set by B's agent (the portal waits for its answer).
    cookie = session_cookie(employee)
    grant = grant_console(user=employee, session_key=cookie, desktop=desktop, protocol="vnc",
                          origin=live_stack.base_url)

    async def console():
        ws = await open_console(live_stack, desktop.pk, grant.token, cookie=cookie)
        assert await vnc_login_as_browser(ws) == [1]
        await ws.send(b"\x01")
        stream = WebsocketBytes(ws)
        width, height = struct.unpack(">HH", await stream.read(4))
        await ws.close()
        return width, height

    assert asyncio.run(console())[0] > 0
    end_desktop_session(desktop=Desktop.objects.get(pk=desktop.pk), actor=employee, reason="test done")
    wait_for_state(desktop, DesktopState.STOPPED, timeout=60)

    after = {name: tasks_run_by(live_stack, name) for name in before}
    ran = {name: after[name][len(before[name]):] for name in before}
    assert "broker.tasks.provision_desktop_task" in ran["agent-local-b"]
    assert "broker.tasks.set_vm_console_password_task" in ran["agent-local-b"]
    assert "broker.tasks.stop_desktop_task" in ran["agent-local-b"]
    assert ran["agent-local"] == []
    # The central worker may run pool and image work (the image's checksum, queued when the
    # fixture published it, can start late on a busy machine), never an operation on a host.
    host_tasks = {"provision_desktop_task", "start_desktop_task", "stop_desktop_task", "delete_desktop_task",
                  "recompose_desktop_task", "set_vm_console_password_task", "reconcile_host_task"}
    assert not [task for task in ran["worker"] if task.rsplit(".", 1)[-1] in host_tasks]
