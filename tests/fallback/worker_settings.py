"""Settings of the worker processes the tests start: the project's, with the fallbacks' (settings/fallback.py)."""

from notifications_site.settings import *  # noqa: F401,F403
from notifications_site.settings.fallback import *  # noqa: F401,F403

ROOT_URLCONF = "tests.fallback.urls"  # the unsubscribe URL, until the project's URLs have it
