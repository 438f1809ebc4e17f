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
from ..store import journal


def notification_delete(*, user, ids: Sequence[int]) -> list[int]:
    """Delete the user's notifications with these ids. Returns the ids deleted."""
    ids = list(ids)[: inbox_setting("MAX_IDS_PER_REQUEST")]
    with transaction.atomic():
        journal.hold([user.pk])
        qs = Notification.objects.for_user(user.pk).filter(pk__in=ids)
        deleted = sorted(qs.values_list("id", flat=True))
        if deleted:
            Notification.objects.filter(pk__in=deleted).delete()
            seq = journal.bury(user.pk, deleted)  # a tombstone each: a client that was away hears of it
            unread = notification_unread_count(user_id=user.pk)
            delivery.publish_on_commit(NotificationsDeleted(user_id=user.pk, ids=deleted, unread=unread, seq=seq))
    return deleted


def notification_admin_delete(*, notifications: Sequence[Notification]) -> int:
    """Admin delete: remove any users' notifications and tell each user's open clients, one event per user."""
    by_user: dict[int, list[int]] = {}
    for n in notifications:
        by_user.setdefault(n.recipient_id, []).append(n.pk)
    deleted = 0
    with transaction.atomic():
        journal.hold(list(by_user))
        for user_id, ids in by_user.items():
            # Only the rows still there: another delete may have taken some since the admin listed them.
            ids = sorted(Notification.objects.filter(recipient_id=user_id, pk__in=ids).values_list("id", flat=True))
            if not ids:
                continue
            Notification.objects.filter(pk__in=ids).delete()
            deleted += len(ids)
            seq = journal.bury(user_id, ids)
            unread = notification_unread_count(user_id=user_id)
            delivery.publish_on_commit(NotificationsDeleted(user_id=user_id, ids=ids, unread=unread, seq=seq))
    return deleted
