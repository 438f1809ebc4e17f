"""
The WebSocket wire contract, defined once: frame types both ways, close codes, the checks of client
frames, and the rendering of every frame the server sends.

The other half is the browser client (inbox/static/inbox/inbox-client.js), which mirrors the close
codes it acts on. Server frames are JSON text; each one has one function here.

Close codes: 4401 unauthenticated, token expired, or its credentials revoked (a password change, a
deactivation: an error frame ``credentials_revoked`` comes first; refresh and reconnect), 4400 bad connect
parameters, 4429 too many refused frames, 1009 frame too large, 1011/1012 the channel layer failed
(reconnect and catch up), 1013 the database is unavailable (try again later), 4408 the user has
REALTIME['MAX_SOCKETS_PER_USER'] sockets open already (back off, retry later), 1008 the socket broke
one of the server's limits (it did not read what was sent to it, or sent protocol pings past its
budget: server/patches/daphne.py; reconnect later and catch up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from inbox.conf import inbox_setting

# --- Frame types -----------------------------------------------------------------------------------

# Server to client. Events are dotted nouns + past-tense verbs; the consumer has one handler per event.
NOTIFICATION_CREATED = "notification.created"
NOTIFICATION_READ = "notification.read"
# A stored notification was edited (the admin): clients replace what they show of it, and count
# nothing again. The frame carries the whole notification, like notification.created.
NOTIFICATION_UPDATED = "notification.updated"
NOTIFICATION_DELETED = "notification.deleted"
# The feed's states (issue 21): seen (the unseen badge), archived / unarchived, an action clicked.
NOTIFICATION_SEEN = "notification.seen"
NOTIFICATION_ARCHIVED = "notification.archived"
NOTIFICATION_UNARCHIVED = "notification.unarchived"
NOTIFICATION_INTERACTED = "notification.interacted"
SYNC_DONE = "sync.done"
# A resume (``since``) from before the oldest point the user's journal can replay (retention purged
# it, inbox.models.JournalFloor): the client reloads its list and resumes from ``seq``.
SYNC_RESET = "sync.reset"
# Channel-layer only: the user's tokens were revoked (inbox.events.CredentialsRevoked); each socket
# sends its frame (an error ``credentials_revoked``) and closes with CLOSE_UNAUTHORIZED.
CREDENTIALS_REVOKED = "credentials.revoked"
ERROR = "error"
PONG = "pong"

# Client to server.
ACK = "ack"
READ = "read"
READ_ALL = "read_all"
SYNC = "sync"
PING = "ping"
CLIENT_FRAME_TYPES = (ACK, READ, READ_ALL, SYNC, PING)

# --- Close codes -------------------------------------------------------------------------------------

CLOSE_UNAUTHORIZED = 4401  # no valid token, or it expired: refresh it and reconnect
CLOSE_BAD_REQUEST = 4400  # bad connect parameters (an error frame says which)
CLOSE_RATE_LIMITED = 4429  # FRAME_ABUSE_CLOSE refused frames in a row
CLOSE_TOO_BIG = 1009  # a client frame over MAX_FRAME_BYTES
CLOSE_LAYER_FAILED = 1011  # could not join the user's group: reconnect and catch up
CLOSE_SERVICE_RESTART = 1012  # the channel layer failed or lost its state: reconnect and catch up
CLOSE_TRY_AGAIN_LATER = 1013  # the database is unavailable
CLOSE_TOO_MANY_SOCKETS = 4408  # the user has MAX_SOCKETS_PER_USER sockets open already
# Sent by the server below the consumer (server/patches/daphne.py, POLICY_VIOLATION): more than
# SERVER['WEBSOCKET_MAX_UNSENT_BYTES'] unread by the client, or protocol pings past their budget.
CLOSE_POLICY_VIOLATION = 1008

# --- Client frames ------------------------------------------------------------------------------------

MAX_ID = 2**63 - 1  # PostgreSQL's bigint


class FrameError(Exception):
    """A client frame (or connect parameter) that breaks the contract; sent back as an error frame."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse_id(value, field: str = "after") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise FrameError(f"invalid_{field}", f"'{field}' must be an integer between 0 and {MAX_ID}.")
    return value


def parse_after_param(raw: str, field: str = "after") -> int:
    """The ``after`` (or ``since``) query parameter of the connect URL."""
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise FrameError(f"invalid_{field}", f"'{field}' must be an integer between 0 and {MAX_ID}.")
    return int(raw)


def beyond_journal(since: int, top: int) -> FrameError:
    """A ``since`` above every number the user's journal handed out: not a point this server gave."""
    return FrameError("invalid_since", f"'since' is beyond this user's change journal (at {top}); reload and resume from sync.done's seq.")


def parse_ids(content: dict) -> list[int]:
    ids = content.get("ids")
    limit = inbox_setting("MAX_IDS_PER_REQUEST")
    if not isinstance(ids, list) or not ids:
        raise FrameError("invalid_ids", "'ids' must be a non-empty list of notification ids.")
    if len(ids) > limit:
        raise FrameError("too_many_ids", f"At most {limit} ids per frame.")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= MAX_ID:
            raise FrameError("invalid_ids", "'ids' must contain positive integer ids only.")
    return sorted(set(ids))


def parse_category(content: dict) -> str | None:
    """The optional ``category`` of a read_all frame."""
    category = content.get("category")
    # A NUL reached PostgreSQL, which refuses it in a string (ValueError: the consumer died with 1011).
    if category is not None and (not isinstance(category, str) or len(category) > 50 or "\x00" in category):
        raise FrameError("invalid_category", "'category' must be a string of at most 50 characters.")
    return category or None


# --- Server frames -------------------------------------------------------------------------------------
#
# Every frame about a change carries ``seq``, its step in the user's change journal (inbox/store/
# journal.py): a client keeps the highest it saw and resumes with ``?since=<seq>``. A new
# notification's step is its id.
#
# A live event travels through the channel layer as a message carrying the frame its sockets send,
# rendered once where the event is made: the consumer checks what it must (``id``, ``resend``) and
# sends ``frame`` as it is (bench/JOURNAL.md, finding 42).


def render(fields: Mapping[str, Any]) -> str:
    """A frame's JSON text."""
    return orjson.dumps(fields).decode()


# notification.created: one frame, rendered three ways that must agree byte for byte
# (tests/realtime/test_protocol.py): a stored row (created_message), a send's rows with their
# shared fields rendered once (sent_messages), a catch-up row (catchup_frame, with ``catchup``).


def created_message(payload: dict[str, Any], unread: int, *, resend: bool = False, group_count: int | None = None) -> dict[str, Any]:
    """
    The channel-layer message of one new notification for its recipient. ``resend`` marks a
    deliberate push of a stored notification (admin): sockets deliver it even when their catch-up
    already covered the id, where a late live event would be a duplicate.

    The frame of a resend says ``"resend": true``: the client shows it again instead of dropping
    an id it already has.
    """
    fields = {"type": NOTIFICATION_CREATED, "notification": payload, "unread": unread, "seq": payload["id"]}
    if resend:
        fields["resend"] = True
    if group_count is not None:
        # A grouped send: which group grew, and its members now (the recipient's, archived ones left out).
        fields["group"] = payload["group"]
        fields["group_count"] = group_count
    message = {"type": NOTIFICATION_CREATED, "id": payload["id"], "frame": render(fields)}
    if resend:
        message["resend"] = True
    return message


def sent_messages(
    payload: dict[str, Any], *, ids: Sequence[int], recipient_ids: Sequence[int], unread: Mapping[int, int]
) -> list[tuple[int, dict[str, Any]]]:
    """
    (recipient id, message) of each row of one send: ``payload`` is the send's template, stored as
    ``ids[i]`` for ``recipient_ids[i]``. The frames are ``created_message``'s, byte for byte; the
    fields the rows share are rendered once and each row's id, recipient and unread count put in
    (bench/JOURNAL.md, finding 42).
    """
    if recipient_ids and type(recipient_ids[0]) is not int:
        # A host's UUID or string keys: the recipient is a JSON string (render() writes it so), each frame rendered whole.
        return [(rid, created_message({**payload, "id": nid, "recipient": rid}, unread.get(rid, 0))) for nid, rid in zip(ids, recipient_ids)]
    shared = render({k: v for k, v in payload.items() if k not in ("id", "recipient")})[1:-1]
    head = '{"type":"%s","notification":{"id":' % NOTIFICATION_CREATED
    return [
        (rid, {"type": NOTIFICATION_CREATED, "id": nid, "frame": f'{head}{nid},"recipient":{rid},{shared}}},"unread":{unread.get(rid, 0)},"seq":{nid}}}'})
        for nid, rid in zip(ids, recipient_ids)
    ]


def catchup_frame(payload: dict[str, Any], unread: int) -> str:
    """A notification the client missed, sent by the catch-up (``after``): its creation's step."""
    return render({"type": NOTIFICATION_CREATED, "notification": payload, "unread": unread, "seq": payload["id"], "catchup": True})


def updated_message(payload: dict[str, Any], unread: int, seq: int = 0) -> dict[str, Any]:
    """
    The channel-layer message of an edited notification for its recipient: every socket sends it
    (an edit is news even to a socket whose catch-up sent the old version).
    """
    return {
        "type": NOTIFICATION_UPDATED,
        "id": payload["id"],
        "seq": seq,
        "frame": render({"type": NOTIFICATION_UPDATED, "notification": payload, "unread": unread, "seq": seq}),
    }


def read_message(*, ids: Sequence[int], read: bool, unread: int, seq: int = 0) -> dict[str, Any]:
    """The channel-layer message of a change of read state (``read`` False: unread again)."""
    return {
        "type": NOTIFICATION_READ,
        "seq": seq,
        "frame": render({"type": NOTIFICATION_READ, "ids": ids, "read": read, "unread": unread, "seq": seq}),
    }


def deleted_message(*, ids: Sequence[int], unread: int, seq: int = 0, reason: str = "deleted") -> dict[str, Any]:
    """The channel-layer message of deleted notifications (``reason``: deleted, retracted, expired)."""
    return {
        "type": NOTIFICATION_DELETED,
        "seq": seq,
        "frame": render({"type": NOTIFICATION_DELETED, "ids": ids, "unread": unread, "seq": seq, "reason": reason}),
    }


def seen_message(*, ids: Sequence[int], unseen: int, unread: int, seq: int = 0) -> dict[str, Any]:
    """The channel-layer message of notifications seen (``unseen``: the user's unseen count after it)."""
    return {
        "type": NOTIFICATION_SEEN,
        "seq": seq,
        "frame": render({"type": NOTIFICATION_SEEN, "ids": ids, "unseen": unseen, "unread": unread, "seq": seq}),
    }


def archived_message(*, ids: Sequence[int], archived: bool, unread: int, unseen: int, seq: int = 0) -> dict[str, Any]:
    """Notifications archived (out of the main list, read and seen) or unarchived (back in it)."""
    kind = NOTIFICATION_ARCHIVED if archived else NOTIFICATION_UNARCHIVED
    return {"type": kind, "seq": seq, "frame": render({"type": kind, "ids": ids, "unread": unread, "unseen": unseen, "seq": seq})}


def interacted_message(*, id: int, action: int, unread: int, seq: int = 0) -> dict[str, Any]:
    """An action of a notification was clicked: it is read (``read`` true, as in notification.read)."""
    return {
        "type": NOTIFICATION_INTERACTED,
        "seq": seq,
        "frame": render({"type": NOTIFICATION_INTERACTED, "id": id, "ids": [id], "action": action, "read": True, "unread": unread, "seq": seq}),
    }


# The replay of a resume (``since``): each change after it once, in journal order, marked ``replay``
# (not news to show as a toast). A row the client cannot have had (its id, the step that created
# it, is above ``since``) comes as notification.created, any other as notification.updated with the
# whole notification as it is now; removed rows as notification.deleted with their reason.


def replay_row_frame(payload: dict[str, Any], *, seq: int, since: int, unread: int) -> str:
    kind = NOTIFICATION_CREATED if payload["id"] > since else NOTIFICATION_UPDATED
    return render({"type": kind, "notification": payload, "unread": unread, "seq": seq, "replay": True})


def replay_deleted_frame(*, ids: Sequence[int], seq: int, reason: str, unread: int) -> str:
    return render({"type": NOTIFICATION_DELETED, "ids": ids, "unread": unread, "seq": seq, "reason": reason, "replay": True})


def sync_reset_frame(*, seq: int, floor: int, unread: int) -> str:
    """``since`` is older than the journal keeps (``floor``): reload the list, then resume from ``seq``."""
    return render({"type": SYNC_RESET, "seq": seq, "floor": floor, "unread": unread})


def credentials_revoked_message() -> dict[str, Any]:
    """The channel-layer message that closes every open socket of a user whose tokens were revoked."""
    return {
        "type": CREDENTIALS_REVOKED,
        "frame": error_frame("credentials_revoked", "This account's sign-in was revoked (password changed or account deactivated); sign in again."),
    }


def sync_done_frame(*, last_id: int, unread: int, more: bool, seq: int | None = None) -> str:
    """
    The end of a catch-up: resume from ``last_id`` (``after``) or ``seq`` (``since``: every change
    up to it was sent, or was in the list the client loaded); ``more`` asks the client to sync again.
    """
    fields = {"type": SYNC_DONE, "last_id": last_id, "unread": unread, "more": more}
    if seq is not None:
        fields["seq"] = seq
    return render(fields)


def error_frame(code: str, detail: str) -> str:
    return render({"type": ERROR, "code": code, "detail": detail})


def pong_frame() -> str:
    return render({"type": PONG})


def with_frame(event: dict) -> dict:
    """
    TODO/compatibility: remove when no server process older than 38b5b9e (events carry their
    rendered frame, bench/JOURNAL.md finding 42) can run beside this one.

    A message of such a process during a rolling restart: notification.created with the frame's
    fields (``notification``, ``unread``, maybe ``resend``), notification.read (``ids``, ``read``,
    ``unread``) or notification.deleted (``ids``, ``unread``) instead of ``frame``. Rendered here as
    that version's consumer did; returns ``frame``, ``resend`` and, for a created one, ``id``.
    """
    fields = {k: v for k, v in event.items() if k not in ("resend", "__asgi_channel__")}
    message = {"frame": render(fields), "resend": event.get("resend", False)}
    if "notification" in event:
        message["id"] = event["notification"]["id"]
    return message
