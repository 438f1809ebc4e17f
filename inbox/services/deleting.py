"""
Deleting: a user's own notifications, or any users' (the admin), announced per user after commit.
"""

from collections.abc import Sequence

from django.db import transaction

from .. import delivery
from ..conf import inbox_setting
from ..events import NotificationsDeleted
from ..models import Notification
from ..selectors import notification_unread_count


def notification_delete(*, user, ids: Sequence[int]) -> list[int]:
    """Delete the user's notifications with these ids. Returns the ids deleted."""
    ids = list(ids)[: inbox_setting("MAX_IDS_PER_REQUEST")]
    with transaction.atomic():
        qs = Notification.objects.for_user(user.pk).filter(pk__in=ids)
        deleted = sorted(qs.values_list("id", flat=True))
        if deleted:
            Notification.objects.filter(pk__in=deleted).delete()
            unread = notification_unread_count(user_id=user.pk)
            delivery.publish_on_commit(NotificationsDeleted(user_id=user.pk, ids=deleted, unread=unread))
    return deleted


def notification_admin_delete(*, notifications: Sequence[Notification]) -> int:
    """Admin delete: remove any users' notifications and tell each user's open clients, one event per user."""
    by_user: dict[int, list[int]] = {}
    for n in notifications:
        by_user.setdefault(n.recipient_id, []).append(n.pk)
    deleted = 0
    with transaction.atomic():
        for user_id, ids in by_user.items():
            Notification.objects.filter(pk__in=ids).delete()
            deleted += len(ids)
            unread = notification_unread_count(user_id=user_id)
            delivery.publish_on_commit(NotificationsDeleted(user_id=user_id, ids=sorted(ids), unread=unread))
    return deleted
