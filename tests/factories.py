"""
Small factories for the tests: notifications and users, one by one or in bulk.

``make_notification`` saves through ``Model.save()`` like any other code would (the post_save
signal schedules a push after commit); the bulk helpers use ``bulk_create`` and push nothing.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.utils import timezone

from inbox.models import Notification

_counter = 0


def _next() -> int:
    global _counter
    _counter += 1
    return _counter


def make_notification(recipient, **fields) -> Notification:
    """One notification for ``recipient`` (a user), saved with ``save()``. Any model field may be given."""
    fields.setdefault("title", f"Notification {_next()}")
    return Notification.objects.create(recipient=recipient, **fields)


def make_notifications(recipient, count: int, **fields) -> list[Notification]:
    """``count`` notifications for one recipient in one bulk write, oldest first (ascending ids)."""
    now = timezone.now()
    rows = [
        Notification(
            recipient=recipient,
            title=fields.get("title", f"Notification {_next()}"),
            created_at=fields.get("created_at", now),
            **{k: v for k, v in fields.items() if k not in ("title", "created_at")},
        )
        for _ in range(count)
    ]
    return Notification.objects.bulk_create(rows)


def make_expired_notification(recipient, **fields) -> Notification:
    fields.setdefault("expires_at", timezone.now() - timedelta(seconds=1))
    return make_notification(recipient, **fields)


def make_users(count: int, *, prefix: str = "bulk") -> list:
    """``count`` active users in one bulk write (one shared password hash: hashing is the slow part)."""
    User = get_user_model()
    password = make_password("pw-secret-123")
    User.objects.bulk_create(
        [User(username=f"{prefix}-{i:05d}", password=password) for i in range(count)], batch_size=2000
    )
    return list(User.objects.filter(username__startswith=f"{prefix}-").order_by("id"))
