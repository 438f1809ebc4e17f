"""
Sending: store one notification per recipient (inbox.store) and announce it after commit (inbox.delivery).
"""

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from django.db import transaction
from django.utils import timezone

from .. import delivery
from ..events import NotificationsSaved, NotificationsSent, NotificationsUpdated
from ..exceptions import UnknownRecipients
from ..models import Notification
from ..selectors import notification_unread_count, notification_unread_counts
from ..store import InactiveRecipients, NewSend, insert_notifications, journal
from ..store.keyed import write_keyed


def notification_create(**arguments) -> list[Notification]:
    """
    Store one notification per recipient and push each to its recipient's open clients after
    commit; ``notification_send``'s arguments. Returns the notifications in recipients order.

    Raises UnknownRecipients, and stores nothing, when a recipient is no longer an active user:
    recipients may come from a per-process cache (inbox/directory.py), and the database has the
    last word.
    """
    return notification_send(**arguments).notifications


def _create_unkeyed(*, recipients, title, message, category, data, link, expires_at, sender) -> list[Notification]:
    """The fast path of a send with no key, group or actions: one bulk write (inbox.store)."""
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


class SendResult(NamedTuple):
    """A send's rows in recipients order, and which of them were new (``created``) or updated by the key."""

    notifications: list[Notification]
    created: list[int]
    updated: list[int]


def notification_send(
    *,
    recipients: Sequence,
    title: str,
    message: str = "",
    category: str = "general",
    data: dict[str, Any] | None = None,
    link: str = "",
    expires_at: datetime | None = None,
    sender=None,
    key: str = "",
    group: str = "",
    actions: Sequence[dict] = (),
    mark_unread: bool = True,
) -> SendResult:
    """
    ``notification_create`` that says which rows were created and which updated. With a ``key``
    (per recipient), a recipient's row of that key is updated in place (unread, unseen and out of
    the archive again unless ``mark_unread`` is False) and pushed as ``notification.updated``; new
    rows are pushed as ``notification.created``, with their ``group``'s count when grouped. The
    arguments are checked by the caller (the API's serializer, ``inbox.notify``).
    """
    if not (key or group or actions):
        rows = _create_unkeyed(
            recipients=recipients, title=title, message=message, category=category, data=data, link=link,
            expires_at=expires_at, sender=sender,
        )
        return SendResult(rows, [n.id for n in rows], [])
    now = timezone.now()
    data = data if data is not None else {}
    fields = dict(category=category, title=title, message=message, data=data, link=link, created_at=now, expires_at=expires_at)
    send = NewSend(
        recipient_ids=[u.pk for u in recipients], sender_id=sender.pk if sender is not None else None,
        key=key, group=group, actions=tuple(actions), mark_unread=mark_unread, **fields,
    )
    try:
        done = write_keyed(send)
    except InactiveRecipients as exc:
        raise UnknownRecipients([u for u in recipients if u.pk in exc.ids]) from None
    found = Notification.objects.select_related("sender").in_bulk(set(done.ids))
    rows = [found[i] for i in done.ids]
    sender_username = sender.get_username() if sender is not None else None
    if done.created:
        template = Notification(sender=sender, key=key, group=group, actions=list(actions), **fields)
        delivery.publish_on_commit(
            NotificationsSent(
                template=template, ids=[nid for _, nid in done.created], recipient_ids=[rid for rid, _ in done.created],
                unread=done.unread, sender_username=sender_username, group_counts=done.group_counts or None,
            )
        )
    if done.updated:
        delivery.publish_on_commit(NotificationsUpdated(notifications=[found[i] for i in done.updated], unread=done.unread))
    return SendResult(rows, [nid for _, nid in done.created], done.updated)


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
    clients, after commit. The row is read again then, so clients get what was committed. The
    edit is a step of the recipient's change journal, taken in the edit's transaction.
    """
    with transaction.atomic():
        notification.seq = journal.stamp(notification.recipient_id, [notification.pk])
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
