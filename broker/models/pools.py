import re
from string import Formatter

from django.core.exceptions import ValidationError
from django.db import models

from .hosts import Host
from .images import GoldenImage


# A domain and volume name libvirt gets as it is: no path separators, spaces or quotes.
SAFE_DESKTOP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DESKTOP_NAME_MAX = 100  # Desktop.name; its data volume adds "-data.qcow2"


def naming_pattern_problem(pattern: str, *, pool_name: str) -> str | None:
    """Why desktops named by `pattern` would not be safe libvirt names; None if they are.

    Only the fields {pool} and {n} (with a format spec, e.g. {n:04d}); no attribute or index
    lookups ({pool.__class__}, {n[0]}) and no conversions, and every name it gives (any
    counter up to a billion) is letters, digits, '.', '_' and '-' and fits the name column."""
    try:
        fields = [(name, conversion) for _text, name, _spec, conversion in Formatter().parse(pattern)
                  if name is not None]
    except ValueError as exc:
        return f"Use {{pool}} and {{n}} only ({exc})."
    if any(name not in ("pool", "n") or conversion for name, conversion in fields):
        return "Use {pool} and {n} only (no other fields, attributes, indexes or conversions)."
    if "n" not in {name for name, _conversion in fields}:
        return "The pattern needs {n}, the counter that keeps desktop names apart."
    try:
        names = [pattern.format(pool=pool_name, n=n) for n in (1, 10**9)]
    except (ValueError, TypeError) as exc:
        return f"Use {{pool}} and {{n}} only ({exc})."
    from django.conf import settings

    for name in names:
        if not SAFE_DESKTOP_NAME.fullmatch(name):
            return f"Desktop names may hold letters, digits, '.', '_' and '-' only (this pattern gives {name!r})."
        if len(settings.VDI_NAME_PREFIX + name) > DESKTOP_NAME_MAX:
            return f"Desktop names would be longer than {DESKTOP_NAME_MAX} characters."
    return None


class Pool(models.Model):
    """What entitled users launch: VMs built from one golden image (dedicated, floating), or
    sessions on the session hosts of a farm (shared SBC desktops and published applications)."""

    class Kind(models.TextChoices):
        DEDICATED = "dedicated", "Dedicated (one persistent desktop per user)"
        FLOATING = "floating", "Floating (any fresh desktop; wiped after each use)"
        FARM = "farm", "Farm (a session per user on shared session hosts)"

    class Protocol(models.TextChoices):
        VNC = "vnc", "VNC (noVNC)"
        SPICE = "spice", "SPICE (spice-html5)"

    name = models.SlugField(max_length=40, unique=True, help_text="Also the middle of the desktops' domain names.")
    display_name = models.CharField(max_length=128)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DEDICATED)
    image = models.ForeignKey(GoldenImage, on_delete=models.PROTECT, null=True, blank=True, related_name="pools",
                              help_text="Dedicated and floating pools: the golden image desktops are cloned from.")
    host = models.ForeignKey(
        Host,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="pools",
        help_text="Pin the pool to one host; empty places each desktop on the least busy enabled host.",
    )
    vcpus = models.PositiveSmallIntegerField(default=1)
    memory_mib = models.PositiveIntegerField(default=256)
    protocol = models.CharField(max_length=8, choices=Protocol.choices, default=Protocol.VNC)
    linked_clones = models.BooleanField(default=True, help_text="qcow2 overlay on the golden image (fast, small).")

    # -- capacity ----------------------------------------------------------------------
    min_spares = models.PositiveIntegerField(
        default=0, help_text="Desktops kept ready and unassigned, so a launch does not wait for a clone."
    )
    max_desktops = models.PositiveIntegerField(default=10, help_text="Never more live desktops than this.")
    naming_pattern = models.CharField(
        max_length=60,
        default="{pool}-{n:04d}",
        help_text="Domain name after the site prefix; {pool} is the pool name, {n} a counter.",
    )
    spares_powered_on = models.BooleanField(
        default=True, help_text="Keep spares running (instant launch) or powered off (saves host memory)."
    )
    data_disk_gib = models.PositiveIntegerField(
        default=1,
        help_text="Dedicated pools: size of each desktop's persistent user-data disk, kept across recompose "
        "(0 for none).",
    )
    # -- backups of the data disks (dedicated pools with one) ------------------------------
    backup_every_hours = models.PositiveIntegerField(
        default=24, help_text="Dedicated pools with a data disk: back each desktop's data disk up this often "
        "(the worst-case data loss, RPO). 0: no scheduled backups.")
    backup_keep = models.PositiveIntegerField(
        default=7, help_text="Backups kept per desktop; older ones are deleted after each new one.")
    keep_backups_of_deleted_desktops_days = models.PositiveIntegerField(
        default=30, help_text="A deleted desktop's backups (a departed employee's files) are kept this many days "
        "after its deletion, for a restore to a new desktop; then the hourly pass deletes them.")
    # -- network (the NIC itself: PoolNetwork, per host; no row, no NIC) -----------------
    isolate_desktops = models.BooleanField(
        null=True, blank=True, default=None,
        choices=[(None, "By the pool's kind (floating: yes; dedicated: no)"), (True, "Yes"), (False, "No")],
        help_text="Desktops of this pool cannot reach each other (libvirt isolated ports on the bridge); they "
        "still reach the gateway and the rest of the network.")
    filter_traffic = models.BooleanField(
        default=True,
        help_text="libvirt's clean-traffic filter on each desktop's port: it may send only from its own MAC "
        "and from the address DHCP gave it (no spoofing of another desktop), and only IPv4 and ARP.")
    # -- sessions ------------------------------------------------------------------------
    disconnect_timeout_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=30,
        help_text="Floating: reset the desktop after its user has been disconnected this long. Dedicated: power "
        "it off. Empty: never.",
    )
    recompose_after = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Maintenance window: from this time the reconciler rebuilds desktops that are not on the "
        "current image version (user data disks are kept). Empty: only when you choose 'Recompose now'.",
    )
    # -- provisioning health, written by the pool reconciler ------------------------------
    desktop_counter = models.PositiveIntegerField(default=0, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    backoff_until = models.DateTimeField(null=True, blank=True, editable=False)
    last_reconciled_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The capacity schedule's rule the reconciler last applied (empty: the pool's own settings);
    # a change is a schedule boundary, written down as a BrokerEvent once.
    schedule_rule_in_force = models.ForeignKey("broker.PoolScheduleRule", on_delete=models.SET_NULL, null=True,
                                               blank=True, editable=False, related_name="+")
    revoked_desktop_grace_hours = models.FloatField(
        null=True,
        blank=True,
        help_text="How long a user's desktop is kept after they lose access (empty: the site default, "
        "VDI_REVOKED_DESKTOP_GRACE_HOURS).",
    )
    is_enabled = models.BooleanField(default=True)
    requires_mfa = models.BooleanField(
        "requires MFA", default=False,
        help_text="Launching needs a login verified with a second factor (authenticator app, passkey or recovery "
        "code); users without one are sent to enrol first.")
    created_at = models.DateTimeField(auto_now_add=True)
    # -- farms (kind "farm"): shared sessions on the pool's session hosts -------------------
    farm_offers_desktop = models.BooleanField(
        default=True, help_text="Farms: offer the full desktop (besides the published applications).")
    max_sessions_per_host = models.PositiveIntegerField(
        default=50, help_text="Farms: never more sessions than this on one session host.")
    max_concurrent_logons_per_host = models.PositiveIntegerField(
        default=2, help_text="Farms: sessions starting at once on one host (logon-storm throttling); "
        "the rest wait in order and see their place.")
    session_geometry = models.CharField(
        max_length=16, default="1280x800", help_text="Farms: the session's screen size, WIDTHxHEIGHT.")
    # -- consoles (broker/console/; empty: the site default, VDI_CONSOLE_* settings) ------
    console_protocol_switch = models.BooleanField(
        default=False, help_text="Users may switch between VNC (noVNC) and SPICE (spice-html5) in the page."
    )
    console_max_per_user = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Consoles one user may have open at once (empty: site default)."
    )
    console_max_per_desktop = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Consoles open at once on one desktop (empty: site default)."
    )
    console_idle_timeout_minutes = models.FloatField(
        null=True, blank=True, help_text="Close a console after this long without keyboard or mouse input "
        "(empty: site default; 0: never)."
    )
    console_max_session_minutes = models.FloatField(
        null=True, blank=True, help_text="Close a console this long after it opened (empty: site default; 0: never)."
    )

    class Meta:
        ordering = ["display_name"]

    def __str__(self):
        return self.display_name or self.name

    @property
    def revoked_desktop_grace(self):
        from datetime import timedelta

        from django.conf import settings

        hours = self.revoked_desktop_grace_hours
        return timedelta(hours=settings.VDI_REVOKED_DESKTOP_GRACE_HOURS if hours is None else hours)

    def save(self, *args, **kwargs):
        if self.isolate_desktops is None:
            self.isolate_desktops = self.desktops_isolated
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "isolate_desktops"}
        super().save(*args, **kwargs)

    @property
    def desktops_isolated(self) -> bool:
        """isolate_desktops, also before the first save has chosen it by the pool's kind."""
        if self.isolate_desktops is None:
            return self.kind == self.Kind.FLOATING
        return self.isolate_desktops

    @property
    def is_floating(self) -> bool:
        return self.kind == self.Kind.FLOATING

    @property
    def is_farm(self) -> bool:
        return self.kind == self.Kind.FARM

    def clean(self):
        import re

        if self.kind == self.Kind.FARM:
            if self.min_spares:
                raise ValidationError({"min_spares": "A farm starts sessions on demand; it keeps no spares."})
            if not re.fullmatch(r"[0-9]{3,4}x[0-9]{3,4}", self.session_geometry or ""):  # ASCII: \d takes any script
                raise ValidationError({"session_geometry": "Write the screen size as WIDTHxHEIGHT, e.g. 1280x800."})
            if self.protocol != self.Protocol.VNC or self.console_protocol_switch:
                raise ValidationError({"protocol": "A farm's sessions have a VNC console only."})
            if self.max_concurrent_logons_per_host < 1 or self.max_sessions_per_host < 1:
                raise ValidationError("A farm needs room for at least one session (and one logon) per host.")
        elif self.image_id is None:
            raise ValidationError({"image": "Dedicated and floating pools are cloned from a golden image."})
        if self.min_spares > self.max_desktops:
            raise ValidationError({"min_spares": "More spares than the pool's maximum size."})
        problem = naming_pattern_problem(self.naming_pattern or "", pool_name=self.name or "pool")
        if problem:
            raise ValidationError({"naming_pattern": problem})
        if self.vcpus < 1:
            raise ValidationError({"vcpus": "A desktop needs at least one vCPU."})
        if self.memory_mib < 64:
            raise ValidationError({"memory_mib": "A desktop needs at least 64 MiB of memory."})
