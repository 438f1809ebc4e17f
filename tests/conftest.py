"""Shared fixtures: users, authenticated API clients, JWTs, real Redis, real daphne processes."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from tests import services as ext


@pytest.fixture
def make_user(db):
    User = get_user_model()

    def make(username=None, *, can_send=False, is_staff=False, is_superuser=False, is_active=True, password="pw-secret-123"):
        user = User.objects.create_user(
            username=username or f"user-{uuid.uuid4().hex[:8]}",
            password=password,
            is_staff=is_staff,
            is_superuser=is_superuser,
            is_active=is_active,
        )
        if can_send:
            user.user_permissions.add(Permission.objects.get(codename="send_notification", content_type__app_label="inbox"))
            user = User.objects.get(pk=user.pk)  # drop the permission cache
        return user

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def service_account(make_user):
    return make_user("billing-service", can_send=True)


@pytest.fixture
def staff_user(make_user):
    return make_user("operator", is_staff=True, is_superuser=True)


def access_token_for(user, **claims) -> str:
    token = AccessToken.for_user(user)
    for k, v in claims.items():
        token[k] = v
    return str(token)


@pytest.fixture
def token_for():
    return access_token_for


@pytest.fixture
def client_for():
    """An APIClient that sends a real JWT access token for the user."""

    def make(user, *, raise_exceptions: bool = True) -> APIClient:
        # raise_exceptions=False: a 500 comes back as a response (to assert it never happens).
        client = APIClient(raise_request_exception=raise_exceptions)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(user)}")
        return client

    return make


@pytest.fixture
def anon_client():
    return APIClient()


@pytest.fixture
def redis_url():
    """The real Redis (database 15, emptied) — skipped without it, except in CI."""
    if not ext.redis_available():
        ext.unavailable(f"Redis is not reachable at {ext.TEST_REDIS_URL}")
    import redis

    r = redis.Redis.from_url(ext.TEST_REDIS_URL)
    r.flushdb()
    r.close()
    return ext.TEST_REDIS_URL


@pytest.fixture
def redis_channel_layer(settings, redis_url):
    """Switch this test to the real channels-redis layer (the one production uses)."""
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": f"test-{uuid.uuid4().hex[:8]}", "capacity": 1000},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def daphne_factory(transactional_db, tmp_path):
    """Start real daphne processes on free ports; all are stopped after the test."""
    servers: list[ext.DaphneServer] = []

    def start(*, redis_url: str | None = None, env: dict | None = None, port: int | None = None, server: str = "daphne") -> ext.DaphneServer:
        server = ext.DaphneServer(redis_url=redis_url, env=env, port=port, log_dir=tmp_path, server=server).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(autouse=True)
def _clean_throttle_counters():
    """Throttle counters live in a per-process cache: each test starts with none."""
    from django.core.cache import caches

    caches["throttle"].clear()
    yield
    caches["throttle"].clear()


@pytest.fixture(autouse=True)
def _forget_cached_send_permissions():
    """User ids are reused between tests: users and permissions remembered per process must not carry over."""
    from inbox import directory

    directory.forget_all()
    yield
    directory.forget_all()
