"""
The one JSON shape of a notification, as plain dicts.

REST responses and WebSocket frames both use ``notification_payload``: a client sees the same
fields whichever way a notification reached it. Plain dicts, because a DRF serializer per row
costs far more than the row itself on hot paths (fan-out, bulk sends, catch-up).
"""

from datetime import datetime
from functools import lru_cache
from typing import Any

from .models import Notification


@lru_cache(maxsize=1024)  # a bulk send formats the same created_at for every recipient
def isoformat(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def notification_payload(n: Notification, *, sender_username: str | None = None) -> dict[str, Any]:
    """Serialize one notification. ``sender_username`` saves a query when the caller knows it."""
    if sender_username is None and n.sender_id is not None:
        sender_username = n.sender.get_username()  # USERNAME_FIELD: a host's user model may name it otherwise
    return {
        "id": n.id,
        "recipient": n.recipient_id,
        "sender": sender_username,
        "category": n.category,
        "title": n.title,
        "message": n.message,
        "data": n.data,
        "link": n.link,
        "created_at": isoformat(n.created_at),
        "delivered_at": isoformat(n.delivered_at),
        "read_at": isoformat(n.read_at),
        "expires_at": isoformat(n.expires_at),
        "state": n.state,
        # The feed's fields (issue 21, docs/feed.md).
        "key": n.key,
        "group": n.group,
        "actions": n.actions,
        "seen_at": isoformat(n.seen_at),
        "archived_at": isoformat(n.archived_at),
        "interacted_at": isoformat(n.interacted_at),
    }
