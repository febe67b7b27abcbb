from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The admin's own look (site title, index, change-page buttons) and its dashboard: what the
    site holds and does now, and charts of the last day and month from stored samples."""

    name = "dashboard"
    verbose_name = "Dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import receivers  # noqa: F401  (Celery task failures are recorded)
