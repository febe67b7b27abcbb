"""What the dashboard's charts and host figures are drawn from.

A `Sample` is the site at one moment (gauges) and what happened since the sample before
(counters), written by a periodic task (dashboard/tasks.py). Minute samples are kept for
VDI_DASHBOARD_MINUTE_SAMPLES_DAYS; each past hour is rolled up into one hour sample, kept for
VDI_DASHBOARD_HOUR_SAMPLES_DAYS: 30 days of charts are 720 rows.
"""

from django.db import models


class Sample(models.Model):
    class Resolution(models.TextChoices):
        MINUTE = "minute", "One sampling period"
        HOUR = "hour", "One hour (rolled up)"

    resolution = models.CharField(max_length=8, choices=Resolution.choices, default=Resolution.MINUTE)
    taken_at = models.DateTimeField(help_text="The end of the period the sample covers.")
    period_seconds = models.PositiveIntegerField()
    # Gauges (hour samples: the mean over the hour).
    consoles_open = models.FloatField(default=0)
    desktops_in_use = models.FloatField(default=0, help_text="Live desktops and sessions with a user.")
    desktops_running = models.FloatField(default=0)
    spares_ready = models.FloatField(default=0)
    vcpus_placed = models.FloatField(default=0)
    vcpus_allowed = models.FloatField(default=0)
    memory_placed_mib = models.FloatField(default=0)
    memory_allowed_mib = models.FloatField(default=0)
    # Counters over the period.
    launches = models.PositiveIntegerField(default=0)
    launch_p50_s = models.FloatField(null=True, blank=True)
    launch_p95_s = models.FloatField(null=True, blank=True)
    launches_timed = models.PositiveIntegerField(default=0, help_text="Launches ready by the sample's time.")
    # What the Celery workers answered when the sample was taken.
    workers_alive = models.PositiveIntegerField(null=True, blank=True)
    worker_names = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["taken_at"]
        indexes = [models.Index(fields=["resolution", "taken_at"], name="dashboard_sample_res_at_idx")]
        constraints = [models.UniqueConstraint(fields=["resolution", "taken_at"], name="dashboard_sample_unique")]

    def __str__(self):
        return f"{self.resolution} sample at {self.taken_at:%Y-%m-%d %H:%M}"


class HostReading(models.Model):
    """What a hypervisor host's libvirt reported at one moment (broker/hypervisor host_usage):
    the dashboard turns the last two into CPU use and disk and network rates."""

    host = models.ForeignKey("broker.Host", on_delete=models.CASCADE, related_name="readings")
    taken_at = models.DateTimeField(db_index=True)
    error = models.TextField(blank=True, help_text="Why the host could not be read (the other fields are empty).")
    cpu_busy_ns = models.BigIntegerField(null=True, blank=True)
    cpu_total_ns = models.BigIntegerField(null=True, blank=True)
    memory_total_kib = models.BigIntegerField(null=True, blank=True)
    memory_available_kib = models.BigIntegerField(null=True, blank=True)
    storage_capacity_bytes = models.BigIntegerField(null=True, blank=True)
    storage_allocation_bytes = models.BigIntegerField(null=True, blank=True)
    storage_available_bytes = models.BigIntegerField(null=True, blank=True)
    disk_read_bytes = models.BigIntegerField(null=True, blank=True)
    disk_write_bytes = models.BigIntegerField(null=True, blank=True)
    net_rx_bytes = models.BigIntegerField(null=True, blank=True)
    net_tx_bytes = models.BigIntegerField(null=True, blank=True)
    running_domains = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-taken_at"]
        indexes = [models.Index(fields=["host", "-taken_at"], name="dashboard_reading_host_idx")]


class TaskFailure(models.Model):
    """A Celery task that raised (recorded by the worker: dashboard/receivers.py)."""

    task_name = models.CharField(max_length=200)
    task_id = models.CharField(max_length=64, blank=True)
    failed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    error = models.CharField(max_length=500, blank=True, help_text="The exception's class and message.")

    class Meta:
        ordering = ["-failed_at"]

    def __str__(self):
        return f"{self.task_name} failed at {self.failed_at:%Y-%m-%d %H:%M:%S}"
