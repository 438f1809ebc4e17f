"""
Read state and receipts: mark read or unread, and a client's ack that it showed a notification.
"""

from collections.abc import Sequence

from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import delivery
from ..conf import inbox_setting
from ..events import NotificationsRead
from ..models import Notification
from ..selectors import notification_unread_count
from ..store import journal


def _set_read(*, user_id: int, ids: Sequence[int] | None, read: bool, category: str | None = None) -> list[int]:
    qs = Notification.objects.for_user(user_id)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids)[: inbox_setting("MAX_IDS_PER_REQUEST")])
    else:
        qs = qs.unexpired()  # "all" means all the user can see
    if category:
        qs = qs.filter(category=category)
    now = timezone.now()
    with transaction.atomic():
        journal.hold([user_id])  # the user's journal lock before the rows' locks (store/journal.py)
        if read:
            changed = list(qs.filter(read_at__isnull=True).select_for_update().values_list("id", flat=True))
            # Read implies delivered: a notification someone read is no longer pending anywhere.
            Notification.objects.filter(pk__in=changed).update(read_at=now, delivered_at=Coalesce("delivered_at", Value(now)))
        else:
            changed = list(qs.filter(read_at__isnull=False).select_for_update().values_list("id", flat=True))
            Notification.objects.filter(pk__in=changed).update(read_at=None)
        # A read is a step of the user's change journal; an ack (below) is not.
        if changed:
            seq = journal.stamp(user_id, changed)
            unread = notification_unread_count(user_id=user_id)
            delivery.publish_on_commit(NotificationsRead(user_id=user_id, ids=sorted(changed), read=read, unread=unread, seq=seq))
    return sorted(changed)


def notification_mark_read(*, user, ids: Sequence[int]) -> list[int]:
    """Mark the user's notifications with these ids read. Returns the ids that changed."""
    return _set_read(user_id=user.pk, ids=ids, read=True)


def notification_mark_unread(*, user, ids: Sequence[int]) -> list[int]:
    return _set_read(user_id=user.pk, ids=ids, read=False)


def notification_mark_all_read(*, user, category: str | None = None) -> list[int]:
    return _set_read(user_id=user.pk, ids=None, read=True, category=category)


def notification_admin_set_read(*, notifications: Sequence[Notification], read: bool) -> int:
    """Admin action: change read state for any users' notifications, one event per user."""
    by_user: dict[int, list[int]] = {}
    for n in notifications:
        by_user.setdefault(n.recipient_id, []).append(n.pk)
    return sum(len(_set_read(user_id=uid, ids=ids, read=read)) for uid, ids in by_user.items())


def notification_ack(*, user, ids: Sequence[int]) -> list[int]:
    """A client of the user has shown these notifications: set ``delivered_at`` where unset (idempotent)."""
    ids = list(ids)[: inbox_setting("MAX_IDS_PER_REQUEST")]
    with transaction.atomic():
        qs = Notification.objects.for_user(user.pk).filter(pk__in=ids, delivered_at__isnull=True)
        changed = sorted(qs.values_list("id", flat=True))
        if changed:
            Notification.objects.filter(pk__in=changed, delivered_at__isnull=True).update(delivered_at=timezone.now())
    return changed
