from django.apps import AppConfig


class InboxConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "inbox"
    verbose_name = "Inbox"

    def ready(self) -> None:
        from . import retention_settings, signals, trusted_issuers

        signals.connect()
        # A bad INBOX["TRUSTED_ISSUERS"] entry stops the process here, naming the entry, not at the first token.
        trusted_issuers.check_configuration()
        # So does a bad retention setting (INBOX["RETENTION_DAYS"], the purge's keys).
        retention_settings.check_configuration()
