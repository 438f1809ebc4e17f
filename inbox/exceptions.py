"""The domain's errors, raised by services and answered by the API."""

from collections.abc import Sequence


class UnknownRecipients(Exception):
    """Some recipients are no longer active users; nothing was stored."""

    def __init__(self, recipients: Sequence) -> None:
        super().__init__(", ".join(repr(getattr(u, "username", u.pk)) for u in recipients))
        self.recipients = list(recipients)


class IdempotencyConflict(Exception):
    """The key was used before with a different request body."""
