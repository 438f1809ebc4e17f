"""
Fixtures of the fallback tests: the scheduler among the delivery backends (the test settings leave
it out), writing in the caller's thread so it is in the test's transaction, and a real SMTP server.
The URLs and the task backend (django-tasks-db) are the project's.
"""

from __future__ import annotations

import pytest

from tests import services as ext

from .support import SMTPServer


@pytest.fixture(autouse=True)
def fallback_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "Inbox <inbox@example.com>"
    settings.INBOX = {
        **settings.INBOX,
        "DELIVERY_BACKENDS": [*settings.INBOX["DELIVERY_BACKENDS"], "inbox.fallback.FallbackScheduler"],
        "FALLBACK_SCHEDULE_IN_BACKGROUND": False,
        "PUBLIC_URL": "http://inbox.example.com",
    }


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server the e-mail backend talks to (Django's SMTP backend, EMAIL_HOST/EMAIL_PORT)."""
    server = SMTPServer(ext.free_port()).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", server.port, 5
    yield server
    server.stop()
