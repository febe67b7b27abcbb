from django.apps import AppConfig


class RequestLogsConfig(AppConfig):
    """Connects the request-id receivers (config/request_ids.py) in every process."""

    name = "config"
    label = "vdi_config"

    def ready(self):
        from . import request_ids  # noqa: F401
