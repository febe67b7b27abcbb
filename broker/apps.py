from django.apps import AppConfig


class BrokerConfig(AppConfig):
    name = "broker"
    verbose_name = "VDI broker"

    def ready(self):
        from . import signals  # noqa: F401  (connects the receivers)
