from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"
    verbose_name = "Identity"

    def ready(self):
        from . import receivers  # noqa: F401  (connects the login, directory and admin-log receivers)
