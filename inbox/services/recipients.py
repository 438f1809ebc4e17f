"""
Recipients named by the product's own ids (inbox.models.ExternalRecipient).

An external id is any string of 1 to 255 characters without NUL. The first send, minted token or
host-signed token that names one creates it: a user account with an unusable password (it cannot
sign in; only tokens minted or signed for it open its inbox) and its profile. Later calls that
carry an e-mail address or a name update the profile when they differ.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import directory
from ..models import ExternalRecipient

MAX_EXTERNAL_ID_LENGTH = 255
#: Usernames of external recipients' accounts start with this (a local account is never named so).
USERNAME_PREFIX = "ext:"


class InvalidExternalId(ValueError):
    pass


class ExternalUser(NamedTuple):
    """What a send needs of an external recipient (as selectors.Recipient), plus its profile."""

    pk: object
    username: str
    email: str
    name: str


def external_id_check(value) -> str:
    """The external id ``value`` names, or InvalidExternalId."""
    if type(value) is not str or not 0 < len(value) <= MAX_EXTERNAL_ID_LENGTH or "\x00" in value:
        raise InvalidExternalId(f"An external id is a string of 1 to {MAX_EXTERNAL_ID_LENGTH} characters without NUL.")
    return value


def external_username(external_id: str) -> str:
    """The account name of an external recipient: readable when short, a digest when long."""
    User = get_user_model()
    limit = User._meta.get_field(User.USERNAME_FIELD).max_length or 150
    name = USERNAME_PREFIX + external_id
    if len(name) <= limit:
        return name
    return USERNAME_PREFIX + "sha256:" + hashlib.sha256(external_id.encode()).hexdigest()


def _cache_key(external_id: str) -> tuple[str, str]:
    return ("external", external_id)


def recipient_ensure(*, external_id: str, email: str | None = None, name: str | None = None) -> ExternalUser:
    """
    The recipient ``external_id`` names, created when unknown; ``email`` and ``name`` (None: leave
    as is) update its profile when they differ. Remembered per process (directory.recipients), so
    a send to a known recipient with the same profile asks nothing of the database.
    """
    external_id = external_id_check(external_id)
    key = _cache_key(external_id)
    known = directory.recipients.get(key)
    if known is not None and (email is None or email == known.email) and (name is None or name == known.name):
        return known
    row = ExternalRecipient.objects.select_related("user").filter(external_id=external_id).first()
    if row is None:
        row = _create(external_id, email or "", name or "")
    else:
        changed = {}
        if email is not None and email != row.email:
            changed["email"] = email
        if name is not None and name != row.name:
            changed["name"] = name
        if changed:
            ExternalRecipient.objects.filter(pk=row.pk).update(**changed, updated_at=timezone.now())
            for field, value in changed.items():
                setattr(row, field, value)
    found = ExternalUser(row.user_id, row.user.get_username(), row.email, row.name)
    if row.user.is_active:
        directory.recipients.set(key, found)
    return found


def _create(external_id: str, email: str, name: str) -> ExternalRecipient:
    User = get_user_model()
    try:
        with transaction.atomic():
            user = User(**{User.USERNAME_FIELD: external_username(external_id)})
            user.set_unusable_password()
            user.save()
            return ExternalRecipient.objects.create(user=user, external_id=external_id, email=email, name=name)
    except IntegrityError:
        # Created by a concurrent call meanwhile: theirs is the one.
        row = ExternalRecipient.objects.select_related("user").filter(external_id=external_id).first()
        if row is None:
            raise
        return row


def recipient_erase(*, external_id: str) -> bool:
    """
    Erase the recipient with every notification of theirs (a person's right to be forgotten): the
    account goes, and its rows with it (ON DELETE CASCADE). False when there was no such recipient.
    The account's deletion revokes its tokens and closes its sockets (inbox/signals.py).
    """
    external_id = external_id_check(external_id)
    row = ExternalRecipient.objects.select_related("user").filter(external_id=external_id).first()
    if row is None:
        return False
    with transaction.atomic():
        row.user.delete()
    directory.recipients.discard(_cache_key(external_id))
    return True
