"""
What happened in the inbox, as domain events: the vocabulary every delivery backend speaks.

Services announce these through the delivery port (``inbox.delivery.publish_on_commit``) once their
transaction has committed; a backend (the WebSocket push, later Web Push and e-mail) decides how to
carry each. Events are plain frozen dataclasses: they name users and rows by id and carry the
unread counts the write computed, never a transport's frame (Zulip's ``event_schema``, anymail's
``EventType``: one normalized vocabulary, many carriers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from .models import Notification


@dataclass(frozen=True, slots=True)
class NotificationsSent:
    """
    One send: the same notification stored once per recipient, ``ids[i]`` for ``recipient_ids[i]``.

    ``template`` holds the fields the rows share (its ``id`` and ``recipient_id`` are unset);
    ``unread`` is each recipient's unread count including the new row. A new row's journal
    number (``seq``) is its id (inbox/store/journal.py).
    """

    template: Notification
    ids: Sequence[int]
    recipient_ids: Sequence[int]
    unread: Mapping[int, int]
    sender_username: str | None
    # A grouped send (issue 21): each recipient's count of the group's members after it.
    group_counts: Mapping[int, int] | None = None


@dataclass(frozen=True, slots=True)
class NotificationsSaved:
    """
    Stored rows to show their recipients: saved one by one (the admin, the shell, other code), or
    pushed again on purpose (``resend``, the admin's action), which clients show even when they
    already have the id.
    """

    notifications: Sequence[Notification]
    unread: Mapping[int, int]
    resend: bool = False


@dataclass(frozen=True, slots=True)
class NotificationsUpdated:
    """
    Stored rows whose shown fields were edited (an operator in the admin changed a title, a
    message, a link, a category, the data or the read state): clients that list them show the new
    version in place. Not a new notification: nothing is counted again; ``unread`` is each
    recipient's count after the edit. Each row's ``seq`` is its step in its recipient's journal.
    """

    notifications: Sequence[Notification]
    unread: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class NotificationsRead:
    """Read state of some of a user's notifications changed (``read`` says which way)."""

    user_id: int
    ids: Sequence[int]
    read: bool
    unread: int
    seq: int = 0  # the change's step in the user's journal (inbox/store/journal.py)


@dataclass(frozen=True, slots=True)
class NotificationsDeleted:
    """Some of a user's notifications were deleted (or retracted, or expired: ``reason``, a Tombstone.Reason)."""

    user_id: int
    ids: Sequence[int]
    unread: int
    seq: int = 0  # the tombstones' step in the user's journal
    reason: str = "deleted"


@dataclass(frozen=True, slots=True)
class CredentialsRevoked:
    """
    Every token issued to the user so far stopped working (a password change, a deactivation, a
    deletion, or ``services.credentials_revoke`` on demand): carriers end what those tokens opened,
    such as the user's live sockets on every server process.
    """

    user_id: int


@dataclass(frozen=True, slots=True)
class NotificationsSeen:
    """Some of a user's notifications were seen (shown in a list: the badge of unseen goes down)."""

    user_id: int
    ids: Sequence[int]
    unseen: int
    unread: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class NotificationsArchived:
    """Some of a user's notifications were archived (``archived``) or taken out of the archive."""

    user_id: int
    ids: Sequence[int]
    archived: bool
    unread: int
    unseen: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class NotificationInteracted:
    """The user clicked one of a notification's actions (``action``: its index); it is read now."""

    user_id: int
    id: int
    action: int
    unread: int
    seq: int = 0


Event = Union[
    NotificationsSent, NotificationsSaved, NotificationsUpdated, NotificationsRead, NotificationsDeleted, CredentialsRevoked,
    NotificationsSeen, NotificationsArchived, NotificationInteracted,
]
