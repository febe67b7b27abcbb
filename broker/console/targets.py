"""What a console connects to, behind one small interface the gateway never looks behind.

The gateway relays bytes to an address and a port and answers a VNC login with a password;
what listens there is the business of a `ConsoleTargetKind`:

- `VmConsole`: a virtual machine's VNC or SPICE port on its hypervisor, found and given a
  one-time password through libvirt (the one door, broker/hypervisor/).
- `SessionDisplay`: a farm session's Xvnc display on its session host, given a one-time
  password by the agent on that host (the portal asks it through the host's Celery queue and
  waits for the answer; the password crosses Redis in that one message, never the browser).

Each kind answers two questions. `prepare`, when a ticket is granted: where does the console
listen now, and give it a fresh one-time password. `port_now`, when the console connects:
where does it listen at this moment (nothing the browser sent takes part).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from ..hypervisor import DomainNotFound, HypervisorError, driver_for_host
from ..models import Desktop, DesktopState
from .close_codes import CloseCode, ConsoleRefused


@dataclass(frozen=True)
class ConsoleEndpoint:
    """A console made ready for one ticket: its port, and the one-time password set on it."""

    port: int
    password: str = field(repr=False)


@dataclass(frozen=True)
class ConsoleTarget:
    """A redeemed ticket: where the gateway connects and how it logs in. Nothing else."""

    desktop_id: int
    user_id: int
    protocol: str
    address: str
    port: int
    ticket_id: int = 0
    # The desktop's Pool row as read when the ticket was redeemed (its console limits).
    pool: object = field(default=None, repr=False, compare=False)
    # VNC: what the gateway answers the desktop's VNC authentication with. Never shown, never logged.
    password: str | None = field(default=None, repr=False)
    # SPICE: True for the ticket's first socket (its main channel), False for the others.
    first_use: bool = True
    # The ticket request's request id, for the console's log lines (config/request_ids.py).
    request_id: str = ""


class ConsoleTargetKind(ABC):
    protocols: frozenset[str] = frozenset({"vnc", "spice"})

    @abstractmethod
    def prepare(self, desktop: Desktop, *, protocol: str, password: str, valid_for_s: int) -> ConsoleEndpoint:
        """Find the console's port now and give it `password` for `valid_for_s` seconds.
        Raises ConsoleRefused with a reason for the page."""

    @abstractmethod
    def port_now(self, desktop: Desktop, *, protocol: str) -> int | None:
        """The port the console listens on at this moment (None: it has none)."""

    def address(self, desktop: Desktop) -> str:
        return desktop.host.console_address


class VmConsole(ConsoleTargetKind):
    def prepare(self, desktop, *, protocol, password, valid_for_s):
        if desktop.host.has_own_agent:
            ports = self._prepare_through_agent(desktop, protocol=protocol, password=password,
                                                valid_for_s=valid_for_s)
        else:
            try:
                ports = set_vm_console_password(desktop, protocol=protocol, password=password,
                                                valid_for_s=valid_for_s)
            except HypervisorError as exc:
                raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE,
                                     "The desktop's host does not answer; try again.") from exc
        port = ports.vnc if protocol == "vnc" else ports.spice
        if not port:
            raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE, f"The desktop has no {protocol.upper()} console.")
        # Keep the broker's record equal to the live definition (a VM restarted behind the
        # broker's back got new ports): a gateway tier without libvirt connects by the record.
        if (ports.vnc, ports.spice) != (desktop.vnc_port, desktop.spice_port):
            Desktop.objects.filter(pk=desktop.pk, state=DesktopState.RUNNING).update(
                vnc_port=ports.vnc, spice_port=ports.spice)
            desktop.vnc_port, desktop.spice_port = ports.vnc, ports.spice
        return ConsoleEndpoint(port=port, password=password)

    @staticmethod
    def _prepare_through_agent(desktop, *, protocol, password, valid_for_s):
        """A host with its own agent: the agent sets the password through its local libvirt."""
        from ..enqueue import NoAnswer, call_and_wait
        from ..hypervisor import GraphicsPorts

        host = desktop.host
        try:
            ports = call_and_wait("broker.tasks.set_vm_console_password_task", desktop.pk, protocol, password,
                                  valid_for_s, queue=host.agent_queue, timeout=settings.VDI_AGENT_CALL_TIMEOUT_SECONDS)
        except NoAnswer as exc:
            raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE,
                                 f"The agent of host {host.name} does not answer; try again in a minute.") from exc
        if ports is None:
            raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE, "The desktop's host does not answer; try again.")
        return GraphicsPorts(listen=ports[2], vnc=ports[0], spice=ports[1])

    def port_now(self, desktop, *, protocol):
        """VDI_CONSOLE_TARGET_LOOKUP "live": asked of the desktop's host through libvirt, from
        the running domain's definition. "recorded" (a proxy tier that cannot reach libvirt),
        and any host with its own agent: what the broker read from that definition when the
        domain last started or its last console was granted."""
        if settings.VDI_CONSOLE_TARGET_LOOKUP != "live" or desktop.host.has_own_agent:
            return desktop.vnc_port if protocol == "vnc" else desktop.spice_port
        try:
            ports = driver_for_host(desktop.host).graphics_ports(desktop.name)
        except DomainNotFound as exc:
            raise ConsoleRefused(CloseCode.DESKTOP_NOT_RUNNING, "The desktop's VM no longer exists.") from exc
        except HypervisorError as exc:
            raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE, "The desktop's host does not answer; try again.") from exc
        return ports.vnc if protocol == "vnc" else ports.spice


def set_vm_console_password(desktop, *, protocol: str, password: str, valid_for_s: int):
    """The VM's console ports from its live definition, after giving `protocol`'s console the
    one-time `password` (where this process reaches the host's libvirt)."""
    from ..services.memory import give_memory_back

    driver = driver_for_host(desktop.host)
    give_memory_back(desktop=desktop, driver=driver)  # an idle desktop whose memory went back to its host
    ports = driver.graphics_ports(desktop.name)
    if (ports.vnc if protocol == "vnc" else ports.spice):
        driver.set_console_password(desktop.name, protocol=protocol, password=password, valid_for_s=valid_for_s)
    return ports


class SessionDisplay(ConsoleTargetKind):
    protocols = frozenset({"vnc"})

    def prepare(self, desktop, *, protocol, password, valid_for_s):
        from ..enqueue import NoAnswer, call_and_wait

        if protocol != "vnc":
            raise ConsoleRefused(CloseCode.TICKET_INVALID, "Shared sessions have a VNC console only.")
        host = desktop.host
        first = _take_first_password(desktop)
        if first is not None:  # the display was started with it: no trip to the agent
            password, port = first, desktop.vnc_port
        else:
            try:
                port = call_and_wait("broker.session_tasks.set_session_password_task", desktop.pk, host.pk,
                                     password, queue=host.agent_queue,
                                     timeout=settings.VDI_AGENT_CALL_TIMEOUT_SECONDS)
            except NoAnswer as exc:
                raise ConsoleRefused(CloseCode.DESKTOP_UNREACHABLE,
                                     f"The session host {host.name} does not answer; try again in a minute.") from exc
        if not port:
            raise ConsoleRefused(CloseCode.DESKTOP_NOT_RUNNING, "Your session is no longer running; launch again.")
        # Like a VM's passwdValidTo: once the ticket's time is up, the agent replaces the
        # password with one nobody knows, unless a newer ticket replaced it already.
        from ..enqueue import enqueue_after_commit
        from ..sessionhost.vncpasswd import password_file_digest

        enqueue_after_commit("broker.session_tasks.expire_session_password_task", desktop.pk, host.pk,
                             password_file_digest(password), queue=host.agent_queue, countdown=valid_for_s)
        return ConsoleEndpoint(port=port, password=password)

    def port_now(self, desktop, *, protocol):
        # A session's display keeps its port for as long as it lives (the agent recorded it at
        # start); a display that died and left its port to another is caught by the VNC login,
        # which needs this ticket's password.
        return desktop.vnc_port if protocol == "vnc" else None


def _take_first_password(desktop) -> str | None:
    """The password a running session's display was started with, if no ticket took it yet and
    it is still of use; taken for this ticket alone (one conditional UPDATE: of two tickets at
    once, one gets it and the other sets a password through the agent)."""
    from .tickets import unseal_first_password

    sealed, until = desktop.sealed_first_console_password, desktop.first_console_password_until
    now = timezone.now()
    if not sealed or until is None or until <= now or not desktop.vnc_port:
        return None
    taken = Desktop.objects.filter(pk=desktop.pk, state=DesktopState.RUNNING, sealed_first_console_password=sealed,
                                   first_console_password_until__gt=now).update(
        sealed_first_console_password="", first_console_password_until=None)
    desktop.sealed_first_console_password, desktop.first_console_password_until = "", None
    return unseal_first_password(sealed, desktop_id=desktop.pk, until=until) if taken else None


VM_CONSOLE = VmConsole()
SESSION_DISPLAY = SessionDisplay()


def console_kind_for(desktop: Desktop) -> ConsoleTargetKind:
    return SESSION_DISPLAY if desktop.pool.is_farm else VM_CONSOLE
