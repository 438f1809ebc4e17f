"""
The Python API of a host project: ``from inbox import notify`` (inbox/__init__.py gives this module's
``notify`` lazily, so ``inbox`` imports before the apps are ready).

``notify(recipient=user, title=...)`` and ``notify(recipients=[...], title=...)`` run the service the
REST send runs (``inbox.services.notification_create``): the rows are written in the caller's
transaction (a savepoint inside it, one of their own outside one), pushed to the recipients' open
sockets after that transaction commits, and never pushed when it rolls back. The input is checked
against the limits the API applies (``INBOX["MAX_TITLE_LENGTH"]`` and the rest), and a bad value is
a ``NotificationInvalid`` (a Django ``ValidationError`` and a ``ValueError``) before anything is
stored.

``idempotency_key``: a retry with the same key and sender returns the first call's notifications
and stores nothing new; the same key with another payload raises ``IdempotencyConflict``. Keys share
the space of the REST send's ``Idempotency-Key`` for the same sender, so a key a REST send used is a
conflict here.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from ..conf import inbox_setting
from ..exceptions import IdempotencyConflict, UnknownRecipients
from ..links import MAX_LENGTH as MAX_LINK_LENGTH
from ..links import validate_link
from ..models import Notification
from .idempotency import idempotency_key_claim, idempotency_key_complete
from .sending import notification_create

__all__ = ["IdempotencyConflict", "NotificationInvalid", "UnknownRecipients", "notify"]

CATEGORY_RE = re.compile(r"[-a-zA-Z0-9_]{1,50}\Z")  # a slug, as the API's SlugField(max_length=50)
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}\Z")  # the API's Idempotency-Key header


class NotificationInvalid(ValidationError, ValueError):
    """A ``notify`` argument breaks a rule of the API (``message_dict``: messages by argument); nothing was stored."""


class _Recipient(NamedTuple):
    """A recipient named by its primary key: all a send needs (``username`` for UnknownRecipients' message)."""

    pk: Any
    username: str


def notify(
    *,
    recipient=None,
    recipients: Iterable | None = None,
    title: str,
    message: str = "",
    category: str = "general",
    data: dict[str, Any] | None = None,
    link: str = "",
    expires_at: datetime | None = None,
    sender=None,
    idempotency_key: str | None = None,
    key: str = "",
    group: str = "",
    actions: list | None = None,
    mark_unread: bool = True,
):
    """
    Send one notification to ``recipient`` (returns the Notification) or to each of ``recipients``
    (returns the list, in their order, a recipient named twice getting one). A recipient is a user
    instance or a primary key of AUTH_USER_MODEL (an int, a UUID, a string). ``sender`` is a user
    instance or None.

    ``key`` (per recipient: a later send with the same key updates that notification in place,
    unread again unless ``mark_unread=False``), ``group`` and ``actions`` (up to two buttons) are
    the REST send's (docs/feed.md, "Keys, groups, states and actions").

    Raises NotificationInvalid for a bad argument, UnknownRecipients when a recipient is not an
    active user, IdempotencyConflict for a key used before with another payload; in each case
    nothing is stored.
    """
    errors: dict[str, list[str]] = {}
    refs = _recipient_refs(recipient, recipients, errors)
    data = {} if data is None else data
    _check_fields(title=title, message=message, category=category, data=data, link=link, expires_at=expires_at, errors=errors)
    if sender is not None and not isinstance(sender, get_user_model()):
        errors.setdefault("sender", []).append("The sender is a user instance, or None.")
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not IDEMPOTENCY_KEY_RE.match(idempotency_key)):
        errors.setdefault("idempotency_key", []).append("1 to 255 printable ASCII characters.")
    feed = _feed_fields(key=key, group=group, actions=actions, mark_unread=mark_unread, errors=errors)
    if errors:
        raise NotificationInvalid(errors)

    fields = dict(title=title, message=message, category=category, data=data, link=link, expires_at=expires_at, **feed)
    single = recipient is not None
    if idempotency_key is None:
        created = _create(refs, sender, fields)
        return created[0] if single else created

    request_hash = _request_hash(refs, fields, single)
    with transaction.atomic():
        claim = idempotency_key_claim(sender=sender, key=idempotency_key, request_hash=request_hash)
        if claim.replay:
            created = _replayed(claim.record.response_body)
        else:
            created = _create(refs, sender, fields)
            idempotency_key_complete(record=claim.record, status=201, body={"notify": [n.id for n in created]})
    if single:
        return created[0] if created else None
    return created


def _create(refs: list[_Recipient], sender, fields: dict) -> list[Notification]:
    return notification_create(recipients=refs, sender=sender, **fields)


def _replayed(body) -> list[Notification]:
    """The first call's notifications, in its order (those deleted since are left out)."""
    ids = body.get("notify") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        # The key was first used by a REST send of this sender: its hash differs, so this is unreachable
        # unless the row was edited by hand.
        raise IdempotencyConflict("the key was used by a send of another kind")
    found = Notification.objects.select_related("sender").in_bulk(ids)
    return [found[i] for i in ids if i in found]


def _request_hash(refs: list[_Recipient], fields: dict, single: bool) -> str:
    """What a retry must repeat: its recipients (as keys), fields and form; prefixed apart from the REST send's hashes."""
    payload = {
        "recipients": [str(r.pk) for r in refs],
        "single": single,
        **fields,
        "expires_at": fields["expires_at"].isoformat() if fields["expires_at"] is not None else None,
    }
    return hashlib.sha256(b"inbox.notify:" + orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _recipient_refs(recipient, recipients, errors: dict) -> list[_Recipient]:
    """The recipients as primary keys of the user model, without duplicates, in first-seen order."""
    if (recipient is None) == (recipients is None):
        errors.setdefault("recipient", []).append("Give either 'recipient' or 'recipients'.")
        return []
    field = "recipient" if recipient is not None else "recipients"
    if recipient is not None:
        given = [recipient]
    elif isinstance(recipients, (str, bytes, dict)) or not isinstance(recipients, Iterable):
        errors.setdefault(field, []).append("'recipients' is a list of users or primary keys.")
        return []
    else:
        given = list(recipients)
    if not given:
        errors.setdefault(field, []).append("Give at least one recipient.")
    limit = inbox_setting("MAX_RECIPIENTS")
    if len(given) > limit:
        errors.setdefault(field, []).append(f"At most {limit} recipients per send.")
        return []
    User = get_user_model()
    pk_field = User._meta.pk
    refs, seen = [], set()
    for value in given:
        if isinstance(value, User):
            pk, name = value.pk, value.get_username()
            if pk is None:
                errors.setdefault(field, []).append("A recipient user must be saved.")
                continue
        else:
            pk = _primary_key(pk_field, value)
            if pk is None:
                errors.setdefault(field, []).append(f"{value!r} is neither a user nor a primary key of one.")
                continue
            name = str(pk)
        if pk not in seen:
            seen.add(pk)
            refs.append(_Recipient(pk, name))
    return refs


def _primary_key(pk_field: models.Field, value):
    """``value`` as the user model's primary key (42, UUID(...), "abc"), or None when it cannot be one."""
    if value is None or isinstance(value, (bool, float, bytes, models.Model)):
        return None
    if isinstance(pk_field, models.IntegerField):
        # The key itself, or its canonical decimal text; no float, no bool (int(True) is user 1).
        if type(value) is str and value.isascii() and value.isdigit() and value == str(int(value)):
            value = int(value)
        return value if type(value) is int and 0 < value < 2**63 else None
    if isinstance(value, str) and (not 0 < len(value) <= 255 or "\x00" in value):
        return None
    try:
        pk = pk_field.to_python(value)
    except (ValidationError, TypeError, ValueError):
        return None
    max_length = getattr(pk_field, "max_length", None)
    if isinstance(pk, str) and max_length and len(pk) > max_length:
        return None
    return pk


def _feed_fields(*, key, group, actions, mark_unread, errors: dict) -> dict:
    """``key``, ``group``, ``actions`` (issue 21) as the service takes them: {} for a send with none (the fast path)."""
    from .keys import validate_actions, validate_group, validate_key

    fields = {}
    for name, value, check in (("key", key, validate_key), ("group", group, validate_group)):
        if value != "":
            try:
                fields[name] = check(value)
            except ValidationError as exc:
                errors.setdefault(name, []).extend(exc.messages)
    if actions:
        try:
            fields["actions"] = validate_actions(actions)
        except ValidationError as exc:
            errors.setdefault("actions", []).extend(exc.messages)
    if not isinstance(mark_unread, bool):
        errors.setdefault("mark_unread", []).append("True or False.")
    elif fields and not mark_unread:
        fields["mark_unread"] = False
    return fields


def _check_fields(*, title, message, category, data, link, expires_at, errors: dict) -> None:
    """The send serializer's rules (inbox/api/serializers.py), for Python values."""

    def bad(name: str, text: str) -> None:
        errors.setdefault(name, []).append(text)

    max_title = inbox_setting("MAX_TITLE_LENGTH")
    if not isinstance(title, str) or not title.strip():
        bad("title", "A title is a non-blank string.")
    elif len(title) > max_title or "\x00" in title:
        bad("title", f"At most {max_title} characters, without NUL.")
    max_message = inbox_setting("MAX_MESSAGE_LENGTH")
    if not isinstance(message, str) or len(message) > max_message or "\x00" in message:
        bad("message", f"A string of at most {max_message} characters, without NUL.")
    if not isinstance(category, str) or not CATEGORY_RE.match(category):
        bad("category", "A category is a slug of at most 50 letters, digits, '-' or '_'.")
    if not isinstance(link, str) or len(link) > MAX_LINK_LENGTH:
        bad("link", f"A string of at most {MAX_LINK_LENGTH} characters.")
    else:
        try:
            validate_link(link)
        except ValidationError as exc:
            errors.setdefault("link", []).extend(exc.messages)
    if expires_at is not None:
        if not isinstance(expires_at, datetime) or timezone.is_naive(expires_at):
            bad("expires_at", "An aware datetime, or None.")
        elif expires_at <= timezone.now():
            bad("expires_at", "'expires_at' must be in the future.")
    problem = _data_problem(data)
    if problem:
        bad("data", problem)


def _data_problem(data) -> str | None:
    """Why ``data`` cannot be stored (not a JSON object, too deep, too large, a NUL), or None."""
    if not isinstance(data, dict):
        return "'data' must be a dict (a JSON object)."
    max_depth = inbox_setting("MAX_DATA_DEPTH")
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            return f"'data' is nested deeper than {max_depth} levels."
        if isinstance(value, str):
            if "\x00" in value:
                return "'data' may not contain NUL characters."
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    return "'data' keys are strings."
                stack.append((k, depth))
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif value is not None and not isinstance(value, (bool, int, float)):
            return f"'data' holds a {type(value).__name__}; only JSON values (dict, list, str, int, float, bool, None)."
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            return "'data' holds an integer JSON cannot carry."
        elif isinstance(value, float) and not math.isfinite(value):
            return "'data' holds NaN or an infinity, which JSON cannot carry."
    try:
        size = len(orjson.dumps(data))
    except (TypeError, orjson.JSONEncodeError):
        return "'data' is not valid JSON."
    limit = inbox_setting("MAX_DATA_BYTES")
    if size > limit:
        return f"'data' is {size} bytes; the limit is {limit}."
    return None
