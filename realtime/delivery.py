"""The WebSocket delivery backend: committed domain events become frames on every open socket of their users."""

from __future__ import annotations

from collections.abc import Sequence

from inbox.delivery import DeliveryBackend
from inbox.events import CredentialsRevoked, Event, NotificationsDeleted, NotificationsRead, NotificationsSaved, NotificationsSent
from inbox.payloads import notification_payload

from . import protocol, publisher


class WebSocketBackend(DeliveryBackend):
    def deliver(self, events: Sequence[Event]) -> None:
        """Publish each domain event's channel-layer messages, one publish per event (in order)."""
        for event in events:
            publisher.publish(render(event))


def render(event: Event) -> list[publisher.Event]:
    """(user id, channel-layer message) of every socket's frame that carries ``event``; [] for none."""
    kind = type(event)
    if kind is NotificationsSent:
        if event.template.is_expired():
            return []
        payload = notification_payload(event.template, sender_username=event.sender_username)
        return protocol.sent_messages(payload, ids=event.ids, recipient_ids=event.recipient_ids, unread=event.unread)
    if kind is NotificationsRead:
        return [(event.user_id, protocol.read_message(ids=event.ids, read=event.read, unread=event.unread))]
    if kind is NotificationsDeleted:
        return [(event.user_id, protocol.deleted_message(ids=event.ids, unread=event.unread))]
    if kind is CredentialsRevoked:
        # Every open socket of the user, on every server process, closes with 4401.
        return [(event.user_id, protocol.credentials_revoked_message())]
    if kind is NotificationsSaved:
        # Stored rows (saved one by one, an admin resend), one message each; expired ones are skipped.
        unread = event.unread
        return [
            (n.recipient_id, protocol.created_message(notification_payload(n), unread.get(n.recipient_id, 0), resend=event.resend))
            for n in event.notifications
            if not n.is_expired()
        ]
    return []
