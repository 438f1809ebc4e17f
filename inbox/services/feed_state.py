"""
The feed's states of a notification (issue 21, docs/feed.md "Keys, groups, states and actions"):
seen apart from read, archived, and an action clicked. Each change is a step of the user's change
journal, in its transaction, and announced to the user's open clients after commit.

Archiving marks read and seen (as Knock counts it: an archived notification counts neither unread
nor unseen), so the unread count, its index and the insert functions' counts stay as they were;
unarchiving brings a notification back to the main list as it is (read).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import delivery
from ..conf import inbox_setting
from ..events import NotificationInteracted, NotificationsArchived, NotificationsSeen
from ..models import Notification
from ..selectors import notification_unread_count, notification_unseen_count
from ..store import journal


class NoSuchAction(Exception):
    """The notification has no action of that index."""


def _targets(user_id, *, ids: Sequence[int] | None, category: str | None = None, read: bool | None = None):
    """The user's rows named by ``ids``, or all the user can see (unexpired) narrowed by the filter."""
    qs = Notification.objects.for_user(user_id)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids)[: inbox_setting("MAX_IDS_PER_REQUEST")])
    else:
        qs = qs.unexpired()
    if category:
        qs = qs.filter(category=category)
    if read is not None:
        qs = qs.filter(read_at__isnull=not read)
    return qs


def notification_mark_seen(*, user, ids: Sequence[int] | None = None, category: str | None = None) -> list[int]:
    """Mark the user's notifications seen (these ids, or all of a category, or all). Returns the ids that changed."""
    now = timezone.now()
    with transaction.atomic():
        journal.hold([user.pk])
        qs = _targets(user.pk, ids=ids, category=category).filter(seen_at__isnull=True)
        changed = sorted(qs.select_for_update().values_list("id", flat=True))
        if changed:
            Notification.objects.filter(pk__in=changed).update(seen_at=now)
            seq = journal.stamp(user.pk, changed)
            delivery.publish_on_commit(
                NotificationsSeen(
                    user_id=user.pk, ids=changed, unseen=notification_unseen_count(user_id=user.pk),
                    unread=notification_unread_count(user_id=user.pk), seq=seq,
                )
            )
    return changed


def notification_set_archived(
    *, user, archived: bool, ids: Sequence[int] | None = None, category: str | None = None, read: bool | None = None
) -> list[int]:
    """
    Archive (``archived``) or unarchive the user's notifications: these ids, or all those of the
    filter (``category``, ``read``). Archiving marks them read and seen. Returns the ids that changed.
    """
    now = timezone.now()
    with transaction.atomic():
        journal.hold([user.pk])
        qs = _targets(user.pk, ids=ids, category=category, read=read).filter(archived_at__isnull=archived)
        changed = sorted(qs.select_for_update().values_list("id", flat=True))
        if changed:
            rows = Notification.objects.filter(pk__in=changed)
            if archived:
                rows.update(
                    archived_at=now, read_at=Coalesce("read_at", Value(now)), seen_at=Coalesce("seen_at", Value(now)),
                    delivered_at=Coalesce("delivered_at", Value(now)),
                )
            else:
                rows.update(archived_at=None)
            seq = journal.stamp(user.pk, changed)
            delivery.publish_on_commit(
                NotificationsArchived(
                    user_id=user.pk, ids=changed, archived=archived, unread=notification_unread_count(user_id=user.pk),
                    unseen=notification_unseen_count(user_id=user.pk), seq=seq,
                )
            )
    return changed


def notification_interact(*, user, notification_id: int, action: int) -> Notification | None:
    """
    The user clicked action ``action`` (0 or 1) of one of their notifications: ``interacted_at``
    (the latest click), read and seen. Returns the row as it is now, None when it is not the user's
    (or expired); raises NoSuchAction when it has no such action.
    """
    now = timezone.now()
    with transaction.atomic():
        journal.hold([user.pk])
        n = Notification.objects.for_user(user.pk).unexpired().select_for_update().filter(pk=notification_id).first()
        if n is None:
            return None
        if not 0 <= action < len(n.actions or []):
            raise NoSuchAction(action)
        Notification.objects.filter(pk=n.pk).update(
            interacted_at=now, read_at=Coalesce("read_at", Value(now)), seen_at=Coalesce("seen_at", Value(now)),
            delivered_at=Coalesce("delivered_at", Value(now)),
        )
        seq = journal.stamp(user.pk, [n.pk])
        delivery.publish_on_commit(
            NotificationInteracted(user_id=user.pk, id=n.pk, action=action, unread=notification_unread_count(user_id=user.pk), seq=seq)
        )
    return Notification.objects.select_related("sender").get(pk=n.pk)


__all__ = ["NoSuchAction", "notification_interact", "notification_mark_seen", "notification_set_archived"]
