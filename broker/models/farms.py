from django.core.exceptions import ValidationError
from django.db import models

from .pools import Pool

# Icons shipped in static/portal/icons/ (no file upload, nothing fetched from elsewhere).
APP_ICONS = [("terminal", "Terminal"), ("editor", "Text editor"), ("calculator", "Calculator"),
             ("browser", "Web browser"), ("app", "Generic application")]


class PublishedApp(models.Model):
    """An application a farm offers on its own: launching it opens a session that runs only
    this program, full size, and ends when the program exits."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="applications",
                             limit_choices_to={"kind": "farm"})
    name = models.SlugField(max_length=40)
    display_name = models.CharField(max_length=128)
    command = models.CharField(
        max_length=500, help_text="Command line run as the employee on the session host, e.g. "
        "\"xterm -fa Monospace\" (split like a shell would, without a shell).")
    icon = models.CharField(max_length=16, choices=APP_ICONS, default="app")
    is_enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["pool", "display_name"]
        constraints = [models.UniqueConstraint(fields=["pool", "name"], name="unique_app_per_farm")]

    def __str__(self):
        return f"{self.display_name} ({self.pool})"

    @property
    def argv(self) -> list[str]:
        import shlex

        return shlex.split(self.command)

    def clean(self):
        import shlex

        try:
            if not shlex.split(self.command or ""):
                raise ValidationError({"command": "Name the program to run."})
        except ValueError as exc:
            raise ValidationError({"command": f"The command line does not parse: {exc}."}) from exc
        if self.pool_id and self.pool.kind != Pool.Kind.FARM:
            raise ValidationError({"pool": "Only farms publish applications."})
