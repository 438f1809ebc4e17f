"""
Keys, groups and actions of a send (issue 21, docs/feed.md "Keys, groups, states and actions"): what
they may be, and the retraction of a notification by its key.

A key (``build-42``) names one notification per recipient, chosen by the sender: a later send with
the same key updates that row in place, and ``notification_retract`` removes it (a tombstone in the
recipient's journal, ``notification.deleted`` with reason ``retracted`` to their open clients).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.db import transaction

from .. import delivery
from ..events import NotificationsDeleted
from ..links import validate_link
from ..models import Notification, Tombstone
from ..selectors import notification_unread_count
from ..store import journal

KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,255}\Z")
GROUP_RE = re.compile(r"[A-Za-z0-9._:-]{1,100}\Z")
MAX_ACTIONS = 2
MAX_ACTION_LABEL = 40
MAX_CALLBACK = 100
CALLBACK_RE = re.compile(r"[A-Za-z0-9._:-]{1,100}\Z")


def validate_key(value) -> str:
    if not isinstance(value, str) or not KEY_RE.match(value):
        raise ValidationError("A key is 1 to 255 characters among letters, digits, '.', '_', ':' and '-'.", code="invalid_key")
    return value


def validate_group(value) -> str:
    if not isinstance(value, str) or not GROUP_RE.match(value):
        raise ValidationError("A group is 1 to 100 characters among letters, digits, '.', '_', ':' and '-'.", code="invalid_group")
    return value


def validate_actions(value) -> list[dict]:
    """
    Up to two buttons: ``{"label": <= 40 characters, "url": a link}`` or ``{"label", "callback": a
    name}`` (the product's own handler, in the charset of keys). Returns them as stored.
    """
    if not isinstance(value, list) or len(value) > MAX_ACTIONS:
        raise ValidationError(f"'actions' is a list of at most {MAX_ACTIONS} buttons.", code="invalid_actions")
    cleaned = []
    for i, action in enumerate(value):
        where = f"actions[{i}]"
        if not isinstance(action, dict) or set(action) - {"label", "url", "callback"}:
            raise ValidationError(f"{where} is an object with 'label' and either 'url' or 'callback'.", code="invalid_actions")
        label = action.get("label")
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_ACTION_LABEL or "\x00" in label:
            raise ValidationError(f"{where}.label is 1 to {MAX_ACTION_LABEL} characters.", code="invalid_actions")
        has_url, has_callback = "url" in action, "callback" in action
        if has_url == has_callback:
            raise ValidationError(f"{where} has either 'url' or 'callback'.", code="invalid_actions")
        if has_url:
            url = action["url"]
            if not isinstance(url, str) or not url:
                raise ValidationError(f"{where}.url is a link.", code="invalid_actions")
            try:
                validate_link(url)
            except ValidationError as exc:
                raise ValidationError(f"{where}.url: {' '.join(exc.messages)}", code="invalid_actions") from None
            cleaned.append({"label": label, "url": url})
        else:
            callback = action["callback"]
            if not isinstance(callback, str) or not CALLBACK_RE.match(callback):
                raise ValidationError(
                    f"{where}.callback is 1 to {MAX_CALLBACK} characters among letters, digits, '.', '_', ':' and '-'.",
                    code="invalid_actions",
                )
            cleaned.append({"label": label, "callback": callback})
    return cleaned


def notification_retract(*, key: str, recipient_ids: Sequence | None = None, sender=None) -> dict[object, list[int]]:
    """
    Retract the notifications of ``key``: of the recipients ``recipient_ids`` (None: every
    recipient), and only those ``sender`` sent when a sender is given (None: any sender's, for a
    service key or the host's own code). Each is buried in its recipient's journal (reason
    ``retracted``) and deleted, in one transaction; each recipient's open clients are told after
    commit. Returns the ids retracted per recipient ({} when none had it).
    """
    qs = Notification.objects.filter(key=key)
    if recipient_ids is not None:
        qs = qs.filter(recipient_id__in=list(recipient_ids))
    if sender is not None:
        qs = qs.filter(sender_id=sender.pk)
    by_user: dict[object, list[int]] = {}
    with transaction.atomic():
        users = sorted(set(qs.values_list("recipient_id", flat=True)), key=str)
        if not users:
            return {}
        journal.hold(users)  # the users' locks first, then the rows (a keyed send does the same)
        for rid, nid in qs.filter(recipient_id__in=users).select_for_update().values_list("recipient_id", "id"):
            by_user.setdefault(rid, []).append(nid)
        for user_id, ids in by_user.items():
            ids.sort()
            seq = journal.bury(user_id, ids, Tombstone.Reason.RETRACTED)
            Notification.objects.filter(pk__in=ids).delete()
            unread = notification_unread_count(user_id=user_id)
            delivery.publish_on_commit(
                NotificationsDeleted(user_id=user_id, ids=ids, unread=unread, seq=seq, reason=Tombstone.Reason.RETRACTED)
            )
    return by_user
