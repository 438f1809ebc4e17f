from django.apps import AppConfig


class ServerConfig(AppConfig):
    name = "server"
    label = "server"
    verbose_name = "Server process"

    def ready(self) -> None:
        # At startup, before any request, instead of as a side effect of importing asgi.py
        # (server/patches). apply() is idempotent: a second ready() patches nothing twice.
        from . import patches

        patches.apply()
