"""
The fallbacks (Web Push and e-mail when no device took a notification): the task queue and the
SMTP server, from the environment. The policy's knobs are INBOX keys (inbox/conf.py).

- ``EMAIL_HOST``, ``EMAIL_PORT``, ``EMAIL_HOST_USER``, ``EMAIL_HOST_PASSWORD``, ``EMAIL_USE_TLS``,
  ``EMAIL_USE_SSL``, ``EMAIL_TIMEOUT``, ``DEFAULT_FROM_EMAIL``: Django's SMTP backend
  (https://docs.djangoproject.com/en/5.2/topics/email/#smtp-backend). ``EMAIL_BACKEND`` may name
  another (``django.core.mail.backends.console.EmailBackend`` prints them: the default with
  ``DJANGO_DEBUG`` on and no ``EMAIL_HOST``).
- ``INBOX_PUBLIC_URL``: the service's address as people reach it (links in e-mails).
- ``INBOX_PUSH_AFTER_SECONDS`` (30), ``INBOX_EMAIL_AFTER_SECONDS`` (900): when each fallback runs;
  ``INBOX_PUSH_AFTER_SECONDS_BY_CATEGORY``, ``INBOX_EMAIL_AFTER_SECONDS_BY_CATEGORY``
  (``security=0,digest=3600``) per category.
- ``INBOX_CRITICAL_CATEGORIES`` (``security``): never muted; ``INBOX_PREFERENCE_CATEGORIES``: the
  categories people may set (unset: any).
- ``INBOX_VAPID_PRIVATE_KEY``, ``INBOX_VAPID_SUBJECT``: Web Push (``python manage.py inbox_vapid``).
"""

import os

from django.core.exceptions import ImproperlyConfigured

from ..env import env_bool, env_float, env_int
from .base import DEBUG
from .inbox import INBOX

# The durable schedule: django-tasks with its database backend (django-tasks-db). Tasks are rows
# of the database the notifications are in, run by ``python manage.py inbox_worker``.
# https://github.com/RealOrangeOne/django-tasks-db
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# SMTP; in development (DJANGO_DEBUG on) with no EMAIL_HOST, the console backend: `make run`'s
# worker prints the e-mails it would send instead of retrying a mail server that is not there.
_smtp = "django.core.mail.backends.smtp.EmailBackend"
_console = "django.core.mail.backends.console.EmailBackend"
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (_console if DEBUG and not os.environ.get("EMAIL_HOST") else _smtp)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# A hung SMTP server must not hold the worker: the task fails and is tried again later.
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Inbox <inbox@localhost>")



def _names(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _seconds_by_category(name: str) -> dict[str, float]:
    """``INBOX_PUSH_AFTER_SECONDS_BY_CATEGORY=security=0,digest=3600``: seconds per category."""
    found = {}
    for item in _names(name, ""):
        category, sep, seconds = item.partition("=")
        try:
            value = float(seconds) if sep and category.strip() else -1.0
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise ImproperlyConfigured(f"{name}: {item!r} is not category=seconds (security=0,digest=3600).")
        found[category.strip()] = value
    return found


INBOX.update(
    {
        "PUBLIC_URL": os.environ.get("INBOX_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
        "PUSH_AFTER_SECONDS": env_float("INBOX_PUSH_AFTER_SECONDS", 30),
        "EMAIL_AFTER_SECONDS": env_float("INBOX_EMAIL_AFTER_SECONDS", 900),
        "PUSH_AFTER_SECONDS_BY_CATEGORY": _seconds_by_category("INBOX_PUSH_AFTER_SECONDS_BY_CATEGORY"),
        "EMAIL_AFTER_SECONDS_BY_CATEGORY": _seconds_by_category("INBOX_EMAIL_AFTER_SECONDS_BY_CATEGORY"),
        # Categories nobody can turn off, mute or hold back by quiet hours.
        "CRITICAL_CATEGORIES": _names("INBOX_CRITICAL_CATEGORIES", "security"),
        # The categories people may set preferences for (comma-separated); unset: any category slug.
        "PREFERENCE_CATEGORIES": _names("INBOX_PREFERENCE_CATEGORIES", "") or None,
    }
)

# Web Push: the VAPID key pair (``python manage.py inbox_vapid`` prints these two lines).
INBOX.update(
    {
        "VAPID_PRIVATE_KEY": os.environ.get("INBOX_VAPID_PRIVATE_KEY", ""),
        "VAPID_SUBJECT": os.environ.get("INBOX_VAPID_SUBJECT", "mailto:inbox@localhost"),
    }
)
