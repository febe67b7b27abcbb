"""A desktop and its lifecycle: the states, the allowed moves, and the one way to move.

    queued ──► cloning ──► starting ──► running ──► stopping ──► stopped
                  │                       ▲ │ ▲                     │ ▲
                  └──── (spare kept off) ─┼─┼─┼─────────────────────┘ │
                                          │ │ └── migrating ◄─┐       │
                                          │ └──► recomposing ─┼───────┘
       any state but deleted ──► failed   └────────────┘      └─ (running: live migration)
    stopped ──► restoring ──► starting | stopped
    any live state ──► deleting ──► deleted          failed ──► queued | recomposing (retry)

`migrating`: the running desktop is being moved to another host by live migration; it keeps
running (and its console keeps working) until the switch-over, then runs on the new host
(`running`, with the new host and console ports), or stays where it was if the move failed.

`restoring`: the powered-off desktop's data disk is being replaced by a backup's copy
(broker/services/backups.py); it starts again afterwards if it was running.

`recomposing` replaces the system disk with a clone of a newer golden image version while
keeping the desktop's user-data disk.

`Desktop.transition()` is the only writer of `state`: a compare-and-set UPDATE plus an event
row in one transaction, so two workers can never both move the same desktop.
"""

import uuid

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from .hosts import Host
from .images import GoldenImageVersion
from .networks import new_mac_address
from .pools import Pool


class DesktopState(models.TextChoices):
    QUEUED = "queued", "Queued"
    CLONING = "cloning", "Cloning disk"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Ready"
    STOPPING = "stopping", "Shutting down"
    STOPPED = "stopped", "Powered off"
    RECOMPOSING = "recomposing", "Updating to a new image"
    MIGRATING = "migrating", "Moving to another host"
    RESTORING = "restoring", "Restoring files from a backup"
    FAILED = "failed", "Failed"
    DELETING = "deleting", "Deleting"
    DELETED = "deleted", "Deleted"


S = DesktopState
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.CLONING, S.STARTING, S.FAILED, S.DELETING}),  # a session starts without a clone
    S.CLONING: frozenset({S.STARTING, S.STOPPED, S.FAILED, S.DELETING}),
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.DELETING}),
    S.RUNNING: frozenset({S.STOPPING, S.STOPPED, S.RECOMPOSING, S.MIGRATING, S.FAILED, S.DELETING}),
    S.MIGRATING: frozenset({S.RUNNING, S.STOPPED, S.FAILED, S.DELETING}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED, S.DELETING}),
    S.STOPPED: frozenset({S.STARTING, S.RECOMPOSING, S.RESTORING, S.FAILED, S.DELETING}),
    S.RESTORING: frozenset({S.STARTING, S.STOPPED, S.FAILED, S.DELETING}),
    S.RECOMPOSING: frozenset({S.STARTING, S.STOPPED, S.FAILED, S.DELETING}),
    S.FAILED: frozenset({S.QUEUED, S.RECOMPOSING, S.DELETING}),
    S.DELETING: frozenset({S.DELETED, S.FAILED}),
    S.DELETED: frozenset(),
}
# States in which the desktop still holds (or may hold) a domain or a volume on its host.
LIVE_STATES = frozenset(ALLOWED_TRANSITIONS) - {S.DELETED}
# States a launch waits through before the console can open.
PROVISIONING_STATES = frozenset({S.QUEUED, S.CLONING, S.STARTING, S.RECOMPOSING})
# States in which a worker is (or should be) acting on the desktop; the reconciler retries
# or fails those that stay too long.
TRANSITIONAL_STATES = frozenset({S.QUEUED, S.CLONING, S.STARTING, S.STOPPING, S.RECOMPOSING, S.MIGRATING,
                                 S.DELETING})


class IllegalTransition(Exception):
    pass


class Desktop(models.Model):
    """What a user launches and sees the console of: a VM on a hypervisor (dedicated and
    floating pools), or a session on a farm's session host (its display; a farm desktop waits
    in `queued` with no host until the farm places it)."""

    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="desktops")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="desktops"
    )
    host = models.ForeignKey(Host, on_delete=models.PROTECT, null=True, blank=True, related_name="desktops")
    image_version = models.ForeignKey(GoldenImageVersion, on_delete=models.PROTECT, null=True, blank=True,
                                      related_name="desktops")
    # Farms: the published application this session runs alone (empty: the full desktop).
    application = models.ForeignKey("broker.PublishedApp", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="sessions")
    name = models.CharField(max_length=100, unique=True,
                            help_text="libvirt domain name on the host (farms: the session's name).")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    state = models.CharField(max_length=16, choices=DesktopState.choices, default=S.QUEUED, editable=False)
    state_changed_at = models.DateTimeField(default=timezone.now, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    # Console ports as read from the running domain's live definition by the worker that
    # started it; the gateway connects to host.console_address on these, nowhere else.
    vnc_port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    spice_port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # Farms: the VNC password the session's display was started with, kept for the first console
    # ticket so that it needs no trip to the agent. That ticket takes it (the field is emptied);
    # after `first_console_password_until` it is of no use, and the agent replaces it on the
    # display. Sealed with a key derived from SECRET_KEY (broker/console/tickets.py,
    # seal_first_password): the database alone cannot reveal it. Never shown.
    sealed_first_console_password = models.CharField(max_length=64, blank=True, editable=False)
    first_console_password_until = models.DateTimeField(null=True, blank=True, editable=False)
    assigned_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Persistent user data (dedicated pools): survives recompose; empty when the pool has none.
    data_volume_name = models.CharField(max_length=120, blank=True, editable=False)
    provisioning_attempts = models.PositiveIntegerField(default=0, editable=False)
    # Set while the broker has taken memory back from the idle guest (its balloon's target);
    # empty: the guest has its pool's full memory.
    memory_target_mib = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # While `restoring`: the backup being copied in, so a restore whose task was lost is sent again
    # (its data disk is deleted before the copy: starting the desktop without it is no answer).
    restoring_from = models.ForeignKey("broker.DataDiskBackup", null=True, blank=True, editable=False,
                                       on_delete=models.SET_NULL, related_name="+")
    # The NIC's MAC (pools with a network): chosen once, so a recompose, a restart or a move to
    # another host keeps it, and with it the address DHCP gives the desktop.
    mac_address = models.CharField(max_length=17, default=new_mac_address, editable=False)
    # Set when the user lost the entitlement: the desktop is kept until then (the user may be
    # entitled again), and deleted afterwards by the periodic cleanup.
    delete_after = models.DateTimeField(null=True, blank=True, editable=False, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The admin's list is in this order, and the reconciler reads the newest rows.
            models.Index(fields=["created_at"], name="desktop_created_at_idx"),
            # The reconciler looks up which desktops own the volumes it finds on a host.
            models.Index(fields=["data_volume_name"], name="desktop_data_volume_idx"),
            # Placement sums what is placed on every host (desktops in some states) at each
            # launch: an index-only scan of those instead of reading the whole table.
            models.Index(fields=["state", "host", "pool"], name="desktop_state_host_pool_idx"),
        ]
        constraints = [
            # One live desktop per user and pool, however many launches race.
            models.UniqueConstraint(
                fields=["pool", "user"],
                condition=Q(user__isnull=False, application__isnull=True) & ~Q(state="deleted"),
                name="one_live_desktop_per_user_and_pool",
            ),
            # Farms: one session per user and published application as well.
            models.UniqueConstraint(
                fields=["pool", "user", "application"],
                condition=Q(user__isnull=False, application__isnull=False) & ~Q(state="deleted"),
                name="one_live_app_session_per_user",
            ),
            # Two live desktops never share a MAC (one L2 network, one DHCP server's leases).
            models.UniqueConstraint(fields=["mac_address"], condition=~Q(state="deleted") & ~Q(mac_address=""),
                                    name="one_live_desktop_per_mac_address"),
        ]

    def __str__(self):
        return self.name

    @property
    def volume_name(self) -> str:
        return f"{self.name}.qcow2"

    @property
    def is_spare(self) -> bool:
        return self.user_id is None

    @property
    def serial_log_path(self) -> str | None:
        if not self.host.serial_log_dir:
            return None
        return f"{self.host.serial_log_dir.rstrip('/')}/{self.name}.log"

    def transition(self, to_state: str, *, expected: str | set | frozenset | None = None, message: str = "",
                   actor=None, where: dict | None = None, **fields) -> bool:
        """Move from `expected` (default: the state this instance holds) to `to_state`.

        Returns False, changing nothing, if the row is no longer in an expected state (another
        worker moved it first), or no longer meets the extra conditions `where` (e.g.
        {"user__isnull": True}: a spare that nobody claimed meanwhile). Extra `fields` are
        written in the same UPDATE.
        """
        if expected is None:
            expected = {self.state}
        elif isinstance(expected, str):
            expected = {expected}
        for from_state in expected:
            if to_state not in ALLOWED_TRANSITIONS[from_state]:
                raise IllegalTransition(f"a desktop cannot go from {from_state} to {to_state}")
        now = timezone.now()
        with transaction.atomic():
            # A conditional UPDATE per possible source state: the row count says whether we
            # won, and which state we left, without a read-then-write race on any database.
            from_state = None
            for candidate in sorted(expected):
                won = Desktop.objects.filter(pk=self.pk, state=candidate, **(where or {})).update(
                    state=to_state, state_changed_at=now, **fields
                )
                if won:
                    from_state = candidate
                    break
            if from_state is None:
                return False
            from .events import DesktopEvent

            DesktopEvent.objects.create(
                desktop_id=self.pk, from_state=from_state, to_state=to_state, message=message[:2000], actor=actor
            )
            from ..progress import announce_progress_on_commit

            announce_progress_on_commit(self.pk)  # the launch page shows the step at once
        self.state, self.state_changed_at = to_state, now
        for key, value in fields.items():
            setattr(self, key, value)
        return True

    def note(self, message: str, *, actor=None):
        """An event row without a state change."""
        from .events import DesktopEvent

        DesktopEvent.objects.create(desktop_id=self.pk, message=message[:2000], actor=actor)
