"""Django 5.1+ native psycopg connection pool instead of a connection per request thread."""

from notifications_site.settings import *  # noqa: F401,F403
from notifications_site.settings import DATABASES, env_int

# https://docs.djangoproject.com/en/5.2/ref/databases/#connection-pool (needs psycopg[pool]).
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["OPTIONS"]["pool"] = {
    "min_size": env_int("DB_POOL_MIN", 4),
    "max_size": env_int("DB_POOL_MAX", 16),
    "timeout": 10,
}
