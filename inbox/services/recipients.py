"""
Recipients named by the product's own ids (inbox.models.ExternalRecipient).

An external id is any string of 1 to 255 characters without NUL. The first send, minted token or
host-signed token that names one creates it: a user account with an unusable password (it cannot
sign in; only tokens minted or signed for it open its inbox) and its profile. Later calls that
carry an e-mail address or a name update the profile when they differ.

``recipients_ensure(items)`` does this for a whole send at once: a 10,000-recipient send by external
ids is a handful of queries (a lookup, the accounts and profiles created in bulk, a read-back), not
10,000 round trips. Accounts are created with ``bulk_create``, which sends no ``post_save``: a new
recipient changes no one's permissions, so the per-process directory stays warm. What was found is
remembered per process (``directory.recipients``) only once the caller's transaction commits: a
send refused after its recipients were created rolls them back, and a remembered id must not name
an account that never was.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import connection, transaction
from django.utils import timezone

from .. import directory
from ..models import ExternalRecipient

MAX_EXTERNAL_ID_LENGTH = 255
MAX_NAME_LENGTH = 255
MAX_EMAIL_LENGTH = 254
#: Usernames of external recipients' accounts start with this (a local account is never named so).
USERNAME_PREFIX = "ext:"
#: Rows per query: under SQLite's variable limit, and PostgreSQL's statements stay small.
CHUNK = 2000


class InvalidExternalId(ValueError):
    pass


class InvalidRecipientProfile(InvalidExternalId):
    """An e-mail address or a name that is not a string of its field's length without NUL."""


class ExternalUser(NamedTuple):
    """What a send needs of an external recipient (as selectors.Recipient), plus its profile."""

    pk: object
    username: str
    email: str
    name: str
    external_id: str = ""


class ExternalRef(NamedTuple):
    """A recipient as a send names it: its external id, and the profile to set (None: leave as is)."""

    external_id: str
    email: str | None = None
    name: str | None = None


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


def _same_profile(known: ExternalUser, ref: ExternalRef) -> bool:
    return (ref.email is None or ref.email == known.email) and (ref.name is None or ref.name == known.name)


def _profile_check(value, field: str, limit: int) -> None:
    if value is not None and (type(value) is not str or len(value) > limit or "\x00" in value):
        raise InvalidRecipientProfile(f"A recipient's {field} is a string of at most {limit} characters without NUL.")


def _merged(items: Sequence[ExternalRef]) -> dict[str, ExternalRef]:
    """One ref per external id, in first-seen order; a later mention's email or name wins."""
    merged: dict[str, ExternalRef] = {}
    for ref in items:
        external_id_check(ref.external_id)
        _profile_check(ref.email, "email", MAX_EMAIL_LENGTH)
        _profile_check(ref.name, "name", MAX_NAME_LENGTH)
        before = merged.get(ref.external_id)
        if before is not None:
            ref = ExternalRef(
                ref.external_id,
                ref.email if ref.email is not None else before.email,
                ref.name if ref.name is not None else before.name,
            )
        merged[ref.external_id] = ref
    return merged


def recipients_known(items: Sequence[ExternalRef]) -> list[ExternalUser] | None:
    """
    The recipients ``items`` name, when this process remembers every one of them with the same
    profile (no query); None when any must be asked of the database or written.
    """
    found = []
    for ref in items:
        known = directory.recipients.get(_cache_key(ref.external_id))
        if known is None or not _same_profile(known, ref):
            return None
        found.append(known)
    return found


def recipients_ensure(items: Sequence[ExternalRef]) -> list[ExternalUser]:
    """
    The recipients ``items`` name, in ``items`` order (one entry per item), the unknown ones created
    and the changed profiles updated, in a few queries whatever their number. Run it inside the
    caller's transaction when the work that follows may be refused: the accounts roll back with it.
    Raises InvalidExternalId for a malformed id or one whose account name a local account holds.
    """
    return [row for row, _ in _ensure(items)]


def recipient_ensure(*, external_id: str, email: str | None = None, name: str | None = None) -> ExternalUser:
    """
    The recipient ``external_id`` names, created when unknown; ``email`` and ``name`` (None: leave
    as is) update its profile when they differ. Remembered per process (directory.recipients), so
    a call for a known recipient with the same profile asks nothing of the database.
    """
    return recipients_ensure([ExternalRef(external_id, email, name)])[0]


def recipient_provision(*, external_id: str, email: str | None = None, name: str | None = None) -> tuple[ExternalRecipient, bool]:
    """
    ``PUT /api/recipients/<external_id>/`` and the minting of a token: the recipient's row (with its
    user), created or updated, and whether it was created. Always read from the database (the
    answer shows the timestamps).
    """
    [(found, created)] = _ensure([ExternalRef(external_id, email, name)], use_cache=False)
    row = ExternalRecipient.objects.select_related("user").get(pk=found.pk)
    return row, created


def recipient_get(*, external_id: str) -> ExternalRecipient | None:
    """The recipient ``external_id`` names (with its user), or None. Local accounts are never found here."""
    external_id = external_id_check(external_id)
    return ExternalRecipient.objects.select_related("user").filter(external_id=external_id).first()


def _ensure(items: Sequence[ExternalRef], *, use_cache: bool = True) -> list[tuple[ExternalUser, bool]]:
    merged = _merged(items)
    found: dict[str, ExternalUser] = {}
    created_ids: set[str] = set()
    if use_cache:
        for external_id, ref in merged.items():
            known = directory.recipients.get(_cache_key(external_id))
            if known is not None and _same_profile(known, ref):
                found[external_id] = known
    missing = [external_id for external_id in merged if external_id not in found]
    if missing:
        rows = _rows(missing)
        rows.update(_update_profiles([(rows[e], merged[e]) for e in missing if e in rows]))
        new = [merged[e] for e in missing if e not in rows]
        if new:
            made, ours = _create(new)
            rows.update(made)
            created_ids |= ours
        remember = []
        for external_id in missing:
            row = rows[external_id]
            found[external_id] = user = ExternalUser(row.user_id, row.username, row.email, row.name, external_id)
            if row.is_active:
                remember.append(user)
        if remember:
            # Only once committed: a rolled-back creation must not be remembered (see the module's docstring).
            transaction.on_commit(partial(_remember, remember), robust=True)
    return [(found[ref.external_id], ref.external_id in created_ids) for ref in items]


def recipients_forget(users) -> None:
    """
    Forget the external recipients among ``users`` (a send found them gone: erased or deactivated on
    another process): the next send that names them asks the database, and creates them anew.
    """
    for user in users:
        external_id = getattr(user, "external_id", "")
        if external_id:
            directory.recipients.discard(_cache_key(external_id))


def _remember(users: list[ExternalUser]) -> None:
    for user in users:
        directory.recipients.set(_cache_key(user.external_id), user)


class _Row(NamedTuple):
    """A profile as read back: plain values, not model instances (10,000 of those cost seconds)."""

    external_id: str
    user_id: object
    email: str
    name: str
    username: str
    is_active: bool


def _rows(external_ids: list[str]) -> dict[str, _Row]:
    User = get_user_model()
    fields = ("external_id", "user_id", "email", "name", f"user__{User.USERNAME_FIELD}", "user__is_active")
    rows = {}
    for start in range(0, len(external_ids), CHUNK):
        chunk = external_ids[start : start + CHUNK]
        for values in ExternalRecipient.objects.filter(external_id__in=chunk).values_list(*fields):
            rows[values[0]] = _Row(*values)
    return rows


def _update_profiles(pairs: list[tuple[_Row, ExternalRef]]) -> dict[str, _Row]:
    """Write the profiles whose email or name changed; returns their rows as they are now."""
    changed = {}
    for row, ref in pairs:
        email = ref.email if ref.email is not None else row.email
        name = ref.name if ref.name is not None else row.name
        if (email, name) != (row.email, row.name):
            changed[row.external_id] = row._replace(email=email, name=name)
    if not changed:
        return changed
    # One prepared UPDATE run for every row (executemany): Django's bulk_update builds a CASE of
    # every row per batch, 50 s of CPU for 10,000 changed profiles on SQLite.
    meta = ExternalRecipient._meta
    quote = connection.ops.quote_name
    email, name, updated_at, user = (quote(meta.get_field(f).column) for f in ("email", "name", "updated_at", "user"))
    sql = f"UPDATE {quote(meta.db_table)} SET {email} = %s, {name} = %s, {updated_at} = %s WHERE {user} = %s"
    now = meta.get_field("updated_at").get_db_prep_value(timezone.now(), connection)
    user_pk = meta.get_field("user").target_field
    with connection.cursor() as cursor:
        cursor.executemany(
            sql, [(r.email, r.name, now, user_pk.get_db_prep_value(r.user_id, connection)) for r in changed.values()]
        )
    return changed


def _unusable_password() -> str:
    # What make_password(None) writes ("!" and 40 random characters), without 40 calls of
    # secrets.choice per account: a 10,000-recipient send creates 10,000 of them.
    return UNUSABLE_PASSWORD_PREFIX + secrets.token_urlsafe(30)


def _create(refs: list[ExternalRef]) -> tuple[dict[str, _Row], set[str]]:
    """
    Accounts and profiles for ``refs`` (none of which had a profile a moment ago), in bulk and in one
    transaction (never an account without its profile), and the external ids created here. A
    concurrent call creating the same ones wins the race harmlessly (ON CONFLICT DO NOTHING, then a
    read-back): theirs are the ones. An account is ours when it carries the random unusable password
    written here; an account of that name that is neither ours nor has the profile is a local
    account, and is refused: naming it would hand it to the product.
    """
    User = get_user_model()
    username_field = User.USERNAME_FIELD
    names = {ref.external_id: external_username(ref.external_id) for ref in refs}
    passwords = {ref.external_id: _unusable_password() for ref in refs}
    with transaction.atomic():
        User.objects.bulk_create(
            [User(**{username_field: names[e], "password": passwords[e]}) for e in names],
            batch_size=500,
            ignore_conflicts=True,
        )
        by_name = {}
        wanted = list(names.values())
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            for pk, username, password in User.objects.filter(**{f"{username_field}__in": chunk}).values_list("pk", username_field, "password"):
                by_name[username] = (pk, password)
        now = timezone.now()
        ours = {e for e in names if (u := by_name.get(names[e])) is not None and u[1] == passwords[e]}
        profiles = [
            ExternalRecipient(
                user_id=by_name[names[ref.external_id]][0], external_id=ref.external_id,
                email=ref.email or "", name=ref.name or "", created_at=now, updated_at=now,
            )
            for ref in refs
            if ref.external_id in ours
        ]
        ExternalRecipient.objects.bulk_create(profiles, batch_size=500, ignore_conflicts=True)
        rows = _rows(list(names))
        for external_id, username in names.items():
            row = rows.get(external_id)
            if row is None or row.username != username:
                raise InvalidExternalId(f"The account name of external id {external_id!r} is taken by a local account.")
    return rows, ours


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


__all__ = [
    "ExternalRef",
    "ExternalUser",
    "InvalidExternalId",
    "InvalidRecipientProfile",
    "external_id_check",
    "recipient_ensure",
    "recipient_erase",
    "recipient_get",
    "recipient_provision",
    "recipients_ensure",
    "recipients_forget",
    "recipients_known",
]
