import posixpath
import re
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.db import models

# libvirt URIs an admin may give a host: QEMU over the transports libvirt documents, and the
# test driver. Not "ext" (runs a command of the URI's choosing on the broker) and none of the
# query parameters that name a program to run (command=, netcat=).
LIBVIRT_SCHEMES = {"qemu", "qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+tls", "qemu+tcp", "qemu+unix", "test"}
LIBVIRT_PARAMETERS = {"socket", "keyfile", "no_verify", "no_tty", "pkipath", "known_hosts", "known_hosts_verify",
                      "sshauth", "mode", "proxy", "name", "tls_priority"}
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9._~:/?#@!$&'()*+,;=%\[\]-]+")
_ADDRESS = re.compile(r"[A-Za-z0-9.:-]+|\[[0-9A-Fa-f:.]+\]")
_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def libvirt_uri_problem(uri: str) -> str | None:
    """Why `uri` is not a libvirt URI the broker connects to; None if it is (or is empty)."""
    if not uri:
        return None
    if not _URI_CHARACTERS.fullmatch(uri):
        return "Spaces and control characters are not allowed in a URI."
    try:
        parts = urlsplit(uri)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError as exc:
        return f"Not a URI: {exc}."
    if parts.scheme not in LIBVIRT_SCHEMES or "://" not in uri:
        return f"Use one of {', '.join(sorted(LIBVIRT_SCHEMES))}, e.g. qemu+ssh://admin@host/system."
    unknown = sorted({key for key, _value in query} - LIBVIRT_PARAMETERS)
    if unknown:
        return f"Parameters not allowed here: {', '.join(unknown)}."
    return None


def address_problem(address: str, *, required: bool = False) -> str | None:
    if not address:
        return "An address is needed." if required else None
    if len(address) > 253 or not _ADDRESS.fullmatch(address):
        return "A host name or an IP address, nothing else."
    return None


def directory_problem(path: str, *, required: bool = False) -> str | None:
    if not path:
        return "A directory is needed." if required else None
    if not path.startswith("/") or "//" in path or posixpath.normpath(path) != path.rstrip("/") or any(
            ord(char) < 32 or char == "\x7f" for char in path):
        return "An absolute path, without '..', '//' or control characters."
    return None


def pool_name_problem(name: str) -> str | None:
    if not _POOL_NAME.fullmatch(name or ""):
        return "Letters, digits, '.', '_' and '-' only."
    return None


# Callables, so the migration does not freeze one machine's environment into the schema.
def default_storage_pool():
    return settings.VDI_STORAGE_POOL


def default_storage_path():
    return settings.VDI_STORAGE_PATH


def default_image_pool():
    return settings.VDI_IMAGE_POOL


def default_image_path():
    return settings.VDI_IMAGE_PATH


def default_serial_log_dir():
    return settings.VDI_GUEST_LOG_DIR


class Host(models.Model):
    """A machine the broker places desktops on: a hypervisor (VMs, reached through a libvirt
    URI) or a session host (shared SBC sessions, driven by the session agent on it)."""

    class Kind(models.TextChoices):
        HYPERVISOR = "hypervisor", "Hypervisor (a VM per desktop)"
        SESSION_HOST = "session", "Session host (shared sessions of a farm)"

    class DomainType(models.TextChoices):
        KVM = "kvm", "KVM (hardware virtualisation)"
        QEMU = "qemu", "QEMU TCG (software emulation; nested or test hosts)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.HYPERVISOR)
    farm = models.ForeignKey(
        "broker.Pool", on_delete=models.PROTECT, null=True, blank=True, related_name="session_hosts",
        limit_choices_to={"kind": "farm"},
        help_text="Session hosts: the farm whose sessions this host runs.",
    )
    libvirt_uri = models.CharField(
        max_length=255,
        blank=True,
        help_text="Hypervisors: ""qemu:///system for this machine, qemu+ssh://user@host/system or "
        "qemu+tls://host/system for others.",
    )
    domain_type = models.CharField(max_length=8, choices=DomainType.choices, default=DomainType.KVM)
    console_address = models.CharField(
        max_length=255,
        default="127.0.0.1",
        help_text="Address the console gateway connects to for this host's VNC/SPICE ports. "
        "Guests listen on it only; keep it on a management network.",
    )
    storage_pool = models.CharField(max_length=64, default=default_storage_pool)
    storage_path = models.CharField(
        max_length=255, default=default_storage_path, help_text="Directory of the desktops' disks."
    )
    image_pool = models.CharField(max_length=64, default=default_image_pool)
    image_path = models.CharField(
        max_length=255, default=default_image_path, help_text="Directory of golden image files on this host."
    )
    serial_log_dir = models.CharField(
        max_length=255,
        blank=True,
        default=default_serial_log_dir,
        help_text="Directory on the host for the guests' serial console logs; empty for none.",
    )
    storage_group = models.SlugField(
        max_length=64, blank=True,
        help_text="Hosts with the same storage group see the same disk directory (NFS, CephFS, a SAN "
        "file system): running desktops move between them by live migration (drain), and a dead host's "
        "dedicated desktops restart on another with their disks. Empty: this host's disks are its own.")
    migration_uri = models.CharField(
        max_length=255, blank=True,
        help_text="The libvirt URI other hosts' workers use to reach this host as a migration destination "
        "(qemu+tls://host/system). Empty: its libvirt URI.")
    migration_address = models.CharField(
        max_length=255, blank=True,
        help_text="Address on the migration network where this host receives a migrating desktop's memory "
        "(tcp://ADDRESS). Empty: libvirt's choice (the host's name).")
    fence_command = models.CharField(
        max_length=500, blank=True,
        help_text="High availability: a command that powers this host off for certain when it stops "
        "answering (a fence agent: fence_ipmilan, fence_redfish, a PDU's; keep passwords in a file it reads, "
        "not here). Exit status 0 means fenced. Run by the central workers.")
    fence_after_seconds = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="High availability: declare the host dead when its libvirt has not answered this long, fence "
        "it with the fence command and restart its dedicated desktops on other hosts of its storage group. "
        "Empty: never by itself; an admin confirms that the host is off.")
    has_own_agent = models.BooleanField(
        default=False,
        help_text="Hypervisors: the host runs its own agent (a Celery worker on the host, on its own queue, "
        "using its local libvirt), and every operation on it goes to that queue. Off: the central workers "
        "drive it through its libvirt URI (qemu+ssh://, qemu+tls://).")
    is_enabled = models.BooleanField(default=True, help_text="New desktops are placed only on enabled hosts.")
    in_maintenance = models.BooleanField(
        default=False, help_text="Drain: no new desktops here; existing ones keep running."
    )
    vcpu_overcommit = models.FloatField(default=2.5, help_text="vCPUs placed per physical CPU (field: 2-3).")
    memory_overcommit = models.FloatField(default=1.2, help_text="Guest memory placed per host memory (1.2-1.5).")
    max_parallel_provisioning = models.PositiveIntegerField(
        default=4, help_text="Clones in flight at once on this host."
    )
    # What the host reported at its last check (broker/services/hosts.py).
    is_online = models.BooleanField(default=True, editable=False)
    cpus = models.PositiveIntegerField(null=True, blank=True, editable=False)
    memory_mib = models.PositiveIntegerField(null=True, blank=True, editable=False)
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    offline_since = models.DateTimeField(null=True, blank=True, editable=False)
    fenced_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="When the host was declared dead and fenced; it takes no desktops until an admin enables it.")
    # Session hosts: what the agent reported with its last sign of life (last_checked_at).
    load_average = models.FloatField(null=True, blank=True, editable=False)
    memory_available_mib = models.PositiveIntegerField(null=True, blank=True, editable=False)
    sessions_running = models.PositiveIntegerField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def accepts_new_desktops(self) -> bool:
        return self.is_enabled and self.is_online and not self.in_maintenance

    @property
    def reachable_uri(self) -> str:
        """The URI another host's worker uses to reach this host's libvirt."""
        return self.migration_uri or self.libvirt_uri

    def shares_storage_with(self, other: "Host") -> bool:
        return bool(self.storage_group) and self.storage_group == other.storage_group

    @property
    def is_session_host(self) -> bool:
        return self.kind == self.Kind.SESSION_HOST

    @property
    def task_queue(self) -> str | None:
        """Where tasks that touch this host go: its own agent's queue, or None for the central
        workers' default queue."""
        return self.agent_queue if (self.is_session_host or self.has_own_agent) else None

    @property
    def agent_queue(self) -> str:
        """The Celery queue that this host's own agent (a worker on the host) consumes."""
        return f"{settings.VDI_AGENT_QUEUE_PREFIX}{self.name}"

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.kind == self.Kind.HYPERVISOR and not self.libvirt_uri:
            raise ValidationError({"libvirt_uri": "A hypervisor needs its libvirt URI."})
        # What libvirt and the gateway get from these fields: nothing it would run or misread.
        problems = {field: problem for field, problem in (
            ("libvirt_uri", libvirt_uri_problem(self.libvirt_uri)),
            ("migration_uri", libvirt_uri_problem(self.migration_uri)),
            ("console_address", address_problem(self.console_address, required=True)),
            ("migration_address", address_problem(self.migration_address)),
            ("storage_path", directory_problem(self.storage_path, required=True)),
            ("image_path", directory_problem(self.image_path, required=True)),
            ("serial_log_dir", directory_problem(self.serial_log_dir)),
            ("storage_pool", pool_name_problem(self.storage_pool)),
            ("image_pool", pool_name_problem(self.image_pool)),
        ) if problem}
        if problems:
            raise ValidationError(problems)
        if self.kind == self.Kind.SESSION_HOST and self.farm_id is None:
            raise ValidationError({"farm": "A session host serves one farm: choose it."})
