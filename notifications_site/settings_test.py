"""Test settings: fast hashing, the in-memory channel layer unless a test asks for Redis."""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from .settings import *  # noqa: E402,F401,F403
from .settings import BASE_DIR, DATABASE_IS_SQLITE, DATABASES, REST_FRAMEWORK  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The test database is a file, so that a daphne process started by an end-to-end test sees it.
# INBOX_TEST_DB names it, so that two test runs on one machine do not share a database.
_test_db = os.environ.get("INBOX_TEST_DB", "")
if DATABASE_IS_SQLITE:
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".pytest-db{('-' + _test_db) if _test_db else ''}.sqlite3")}
elif _test_db:
    DATABASES["default"]["TEST"] = {"NAME": f"test_inbox_{_test_db}"}
# The test process runs without the pool (pytest-django creates and flushes databases through
# plain connections); daphne processes started by the tests use the production settings, pool on.
if "pool" in DATABASES["default"].get("OPTIONS", {}):
    del DATABASES["default"]["OPTIONS"]["pool"]

# Throttles are exercised by their own tests with their own rates.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"send": "100000/s", "read": "100000/s", "auth": "100000/s"}}
REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"] = ["inbox.api.renderers.FastJSONRenderer"]

# The fallbacks' scheduler (inbox/fallback/) is left out of the in-process tests' delivery backends:
# in the service it writes from a thread of its own, off the send path, which a test's transaction
# cannot see or roll back. tests/fallback/ adds it back, writing in the caller's thread (in the
# test's transaction); daphne processes started by tests run the service's settings, scheduler on.
from .settings import INBOX  # noqa: E402

INBOX = {
    **INBOX,
    "DELIVERY_BACKENDS": [b for b in INBOX["DELIVERY_BACKENDS"] if b != "inbox.fallback.FallbackScheduler"],
    "FALLBACK_SCHEDULE_IN_BACKGROUND": False,
}
