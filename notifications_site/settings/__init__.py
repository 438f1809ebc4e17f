"""
Settings for the Inbox notification service, by concern (HackSoft's ``config/settings/<part>.py``).

Everything comes from the environment, with safe local defaults (cookiecutter-django style):

- ``DATABASE_URL``: SQLite file ``db.sqlite3`` when unset; ``postgres://...`` in production and CI.
- ``REDIS_URL``: the in-memory channel layer when unset (one process only); ``redis://...`` otherwise.
- ``REDIS_URLS``: several Redis servers (comma-separated; groups spread by consistent hashing); wins over ``REDIS_URL``.
- ``DJANGO_SECRET_KEY``: required when ``DJANGO_DEBUG`` is off; the service refuses to start without it.
- ``DJANGO_DEBUG``: ``1``/``true`` for local development (the default), ``0``/``false`` in production.
- ``DJANGO_ALLOWED_HOSTS``: comma-separated host names.

- ``EMAIL_HOST``, ``EMAIL_PORT``, ... ``INBOX_VAPID_PRIVATE_KEY``, ``INBOX_PUBLIC_URL``: the fallbacks (``fallback``).

``base`` is Django and the database; ``api`` the REST framework; ``inbox``, ``realtime`` and ``server``
the three parts' own dicts, each read through its part's accessor with documented defaults.
``fallback`` (after ``inbox``, whose dict it extends) is the Web Push and e-mail fallbacks: the durable
schedule (``TASKS``, django-tasks-db, run by ``python manage.py inbox_worker``), the SMTP server, the
VAPID keys and the policy's delays (docs/fallbacks.md).
"""

from .base import *  # noqa: F401,F403
from .api import *  # noqa: F401,F403
from .inbox import *  # noqa: F401,F403
from .fallback import *  # noqa: F401,F403
from .realtime import *  # noqa: F401,F403
from .server import *  # noqa: F401,F403
