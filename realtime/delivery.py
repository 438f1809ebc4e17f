"""The WebSocket delivery backend: committed domain events become frames on every open socket of their users."""

from __future__ import annotations

from collections.abc import Sequence

from inbox.delivery import DeliveryBackend
from inbox.events import Event, NotificationsDeleted, NotificationsRead, NotificationsSaved, NotificationsSent

from . import fanout


class WebSocketBackend(DeliveryBackend):
    def deliver(self, events: Sequence[Event]) -> None:
        for event in events:
            if type(event) is NotificationsSent:
                fanout.notification_sent(
                    event.template, ids=event.ids, recipient_ids=event.recipient_ids, unread=event.unread,
                    sender_username=event.sender_username,
                )
            elif type(event) is NotificationsRead:
                fanout.notifications_read(user_id=event.user_id, ids=event.ids, read=event.read, unread=event.unread)
            elif type(event) is NotificationsDeleted:
                fanout.notifications_deleted(user_id=event.user_id, ids=event.ids, unread=event.unread)
            elif type(event) is NotificationsSaved:
                fanout.notifications_created(event.notifications, unread=event.unread, resend=event.resend)
