"""The WebSocket delivery backend: committed domain events become frames on every open socket of their users."""

from __future__ import annotations

from collections.abc import Sequence

from inbox.delivery import DeliveryBackend
from channels.layers import InMemoryChannelLayer, get_channel_layer

from inbox.events import (
    CredentialsRevoked, Event, NotificationsDeleted, NotificationsRead, NotificationsSaved, NotificationsSent, NotificationsUpdated,
    NotificationInteracted, NotificationsArchived, NotificationsSeen,
)
from inbox.payloads import notification_payload

from . import protocol, publisher


class WebSocketBackend(DeliveryBackend):
    def deliver(self, events: Sequence[Event]) -> None:
        """Publish the events' channel-layer messages, in order, in one publish (a purge hands 1,000 events at once)."""
        publisher.publish([message for event in events for message in render(event)])

    def reach(self) -> str | None:
        """
        What a delivery from this process will not do, in a sentence for the person who caused
        it (``manage.py notify``), or None when it reaches every server's sockets. The in-memory
        channel layer (no REDIS_URL, as under ``make run``) is one per process: a shell's events
        never reach the server's sockets.
        """
        layer = get_channel_layer()
        if layer is None:
            return "There is no channel layer (CHANNEL_LAYERS is empty), so no open page is told."
        if isinstance(layer, InMemoryChannelLayer):
            return (
                "Not pushed live: without REDIS_URL each process has its own in-memory channel layer, and this "
                "command's does not reach the server's sockets. Open pages show it when they reconnect or are "
                "reloaded; set REDIS_URL (for the server and for this command) to push it live."
            )
        return None


def render(event: Event) -> list[publisher.Event]:
    """(user id, channel-layer message) of every socket's frame that carries ``event``; [] for none."""
    kind = type(event)
    if kind is NotificationsSent:
        if event.template.is_expired():
            return []
        payload = notification_payload(event.template, sender_username=event.sender_username)
        if event.group_counts:
            # A grouped send: each frame says its recipient's count of the group (rendered whole, per row).
            counts, unread = event.group_counts, event.unread
            return [
                (rid, protocol.created_message({**payload, "id": nid, "recipient": rid}, unread.get(rid, 0), group_count=counts.get(rid, 0)))
                for nid, rid in zip(event.ids, event.recipient_ids)
            ]
        return protocol.sent_messages(payload, ids=event.ids, recipient_ids=event.recipient_ids, unread=event.unread)
    if kind is NotificationsRead:
        return [(event.user_id, protocol.read_message(ids=event.ids, read=event.read, unread=event.unread, seq=event.seq))]
    if kind is NotificationsDeleted:
        return [(event.user_id, protocol.deleted_message(ids=event.ids, unread=event.unread, seq=event.seq, reason=event.reason))]
    if kind is NotificationsSeen:
        return [(event.user_id, protocol.seen_message(ids=event.ids, unseen=event.unseen, unread=event.unread, seq=event.seq))]
    if kind is NotificationsArchived:
        message = protocol.archived_message(ids=event.ids, archived=event.archived, unread=event.unread, unseen=event.unseen, seq=event.seq)
        return [(event.user_id, message)]
    if kind is NotificationInteracted:
        return [(event.user_id, protocol.interacted_message(id=event.id, action=event.action, unread=event.unread, seq=event.seq))]
    if kind is CredentialsRevoked:
        # Every open socket of the user, on every server process, closes with 4401.
        return [(event.user_id, protocol.credentials_revoked_message())]
    if kind is NotificationsUpdated:
        # Edited rows, one message each, sent by every socket of the recipient; expired ones are skipped.
        return [
            (n.recipient_id, protocol.updated_message(notification_payload(n), event.unread.get(n.recipient_id, 0), n.seq))
            for n in event.notifications
            if not n.is_expired()
        ]
    if kind is NotificationsSaved:
        # Stored rows (saved one by one, an admin resend), one message each; expired ones are skipped.
        unread = event.unread
        return [
            (n.recipient_id, protocol.created_message(notification_payload(n), unread.get(n.recipient_id, 0), resend=event.resend))
            for n in event.notifications
            if not n.is_expired()
        ]
    return []
