"""
Sending: store one notification per recipient (inbox.store) and announce it after commit (inbox.delivery).
"""

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import delivery
from ..events import NotificationsSaved, NotificationsSent, NotificationsUpdated
from ..exceptions import UnknownRecipients
from ..models import Notification
from ..selectors import notification_unread_count, notification_unread_counts
from ..store import InactiveRecipients, NewSend, insert_notifications


def notification_create(
    *,
    recipients: Sequence,
    title: str,
    message: str = "",
    category: str = "general",
    data: dict[str, Any] | None = None,
    link: str = "",
    expires_at: datetime | None = None,
    sender=None,
) -> list[Notification]:
    """
    Store one notification per recipient in one bulk write and push each to its recipient's
    open clients after commit. Returns the notifications in recipients order.

    Raises UnknownRecipients, and stores nothing, when a recipient is no longer an active user:
    recipients may come from a per-process cache (inbox/directory.py), and the database has the
    last word.
    """
    now = timezone.now()
    data = data if data is not None else {}
    recipient_ids = [u.pk for u in recipients]
    fields = dict(category=category, title=title, message=message, data=data, link=link, created_at=now, expires_at=expires_at)
    template = Notification(sender=sender, **fields)
    send = NewSend(recipient_ids=recipient_ids, sender_id=sender.pk if sender is not None else None, context=template, **fields)
    try:
        ids, _ = insert_notifications(send, announce=_announce)
    except InactiveRecipients as exc:
        raise UnknownRecipients([u for u in recipients if u.pk in exc.ids]) from None
    created = [Notification(id=nid, recipient_id=rid, sender=sender, **fields) for nid, rid in zip(ids, recipient_ids)]
    for n in created:  # saved rows, as Model.from_db() marks them
        n._state.adding, n._state.db = False, "default"
    return created


def _announce(send: NewSend, ids: list[int], unread: dict[int, int]) -> None:
    """
    Push a send's notifications to their recipients' open clients once its rows are committed: at
    once outside a transaction, at the caller's commit inside one (never for a rollback). Called by
    the store after the write (on group commit, by the thread that wrote the batch, in id order).
    """
    template = send.context
    sender = template.sender
    delivery.publish_on_commit(
        NotificationsSent(
            template=template, ids=ids, recipient_ids=send.recipient_ids, unread=unread,
            sender_username=sender.get_username() if sender is not None else None,
        )
    )


def notification_push_saved(*, notification: Notification) -> None:
    """Push a notification that was saved one by one (admin, shell, other code) after commit."""
    transaction.on_commit(partial(_push_one, notification.pk), robust=True)


def _push_one(notification_id: int) -> None:
    n = Notification.objects.select_related("sender").filter(pk=notification_id).first()
    if n is None:
        return
    delivery.deliver((NotificationsSaved(notifications=[n], unread={n.recipient_id: notification_unread_count(user_id=n.recipient_id)}),))


def notification_push_updated(*, notification: Notification) -> None:
    """
    Show an edited notification (the admin's change form) in place on its recipient's open
    clients, after commit. The row is read again then, so clients get what was committed.
    """
    transaction.on_commit(partial(_push_updated, notification.pk), robust=True)


def _push_updated(notification_id: int) -> None:
    n = Notification.objects.select_related("sender").filter(pk=notification_id).first()
    if n is None:
        return
    unread = {n.recipient_id: notification_unread_count(user_id=n.recipient_id)}
    delivery.deliver((NotificationsUpdated(notifications=[n], unread=unread),))


def notification_resend(*, notifications: Sequence[Notification]) -> int:
    """Push stored notifications again to their recipients' open clients (admin action)."""
    items = [n for n in notifications if not n.is_expired()]
    unread = notification_unread_counts(user_ids=[n.recipient_id for n in items])
    delivery.publish_on_commit(NotificationsSaved(notifications=items, unread=unread, resend=True))
    return len(items)
