"""
Grouping, computed when read (issue 21, docs/feed.md "Keys, groups, states and actions"): the
notifications of one ``group`` (``post-17-likes``) listed as one entry, with their count, unread
count and latest actors, and marked read together. Nothing is delayed or merged when sent: a
grouped send is a row per notification, as any other.

The actor of a notification is ``data["actor"]`` when the sender put a name there (``"Ana"``), else
the sender's username.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from django.db import transaction
from django.db.models import Count, Max, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import delivery
from ..events import NotificationsRead
from ..models import Notification
from ..payloads import notification_payload
from ..selectors import notification_list_for_user, notification_unread_count
from ..store import journal

ACTORS = 3  # the latest few actors of an entry
ACTOR_SCAN = 50  # members read to find them (a group of 10,000 likes reads 50)


class GroupPage(NamedTuple):
    entries: list[dict[str, Any]]
    upto: int  # the snapshot: members with a higher id are not counted on any page of this listing
    before: int | None  # the next page's position (None: this was the last)


def _actor(data, sender_username) -> str | None:
    actor = data.get("actor") if isinstance(data, dict) else None
    return actor if isinstance(actor, str) and actor else sender_username


def notification_groups_for_user(
    *, user, limit: int, before: int | None = None, upto: int | None = None, category: str | None = None
) -> GroupPage:
    """
    One entry per group (a notification without a group is an entry of its own), newest first by
    the newest member, ``limit`` of them, those whose newest member is below ``before``. Counted as
    of ``upto`` (the newest id when the first page was read): a group that grows while a client
    pages on keeps its place, so no entry is listed twice or skipped; what came after arrives live
    (``notification.created`` with ``group_count``) or on the next first page.
    """
    base = notification_list_for_user(user=user, category=category).order_by()
    if upto is None:
        upto = base.aggregate(m=Max("id"))["m"] or 0
    base = base.filter(id__lte=upto)
    groups = (
        base.exclude(group="")
        .values("group")
        .annotate(newest=Max("id"), count=Count("id"), unread_count=Count("id", filter=Q(read_at__isnull=True)))
    )
    singles = base.filter(group="")
    if before is not None:
        groups = groups.filter(newest__lt=before)
        singles = singles.filter(id__lt=before)
    grouped = list(groups.order_by("-newest")[: limit + 1])
    single_ids = list(singles.order_by("-id").values_list("id", flat=True)[: limit + 1])
    merged = sorted(
        [(g["newest"], g) for g in grouped] + [(i, None) for i in single_ids], key=lambda pair: pair[0], reverse=True
    )
    more = len(merged) > limit
    merged = merged[:limit]
    rows = Notification.objects.select_related("sender").in_bulk([newest for newest, _ in merged])
    entries = []
    for newest, g in merged:
        n = rows[newest]
        sender_username = n.sender.get_username() if n.sender_id is not None else None
        if g is None:
            entries.append({
                "group": None, "count": 1, "unread_count": int(n.read_at is None),
                "actors": [a for a in [_actor(n.data, sender_username)] if a], "latest": notification_payload(n),
            })
            continue
        actors: list[str] = []
        members = base.filter(group=g["group"]).order_by("-id").values_list("data", "sender__username")[:ACTOR_SCAN]
        for data, username in members:
            a = _actor(data, username)
            if a and a not in actors:
                actors.append(a)
                if len(actors) == ACTORS:
                    break
        entries.append({
            "group": g["group"], "count": g["count"], "unread_count": g["unread_count"], "actors": actors,
            "latest": notification_payload(n),
        })
    return GroupPage(entries, upto, merged[-1][0] if more and merged else None)


def notification_group_mark_read(*, user, group: str) -> list[int] | None:
    """
    Mark every unread member of the user's ``group`` read: one ``NotificationsRead`` event. Returns
    the ids that changed, None when the user has no notification in that group.
    """
    now = timezone.now()
    with transaction.atomic():
        journal.hold([user.pk])
        members = Notification.objects.for_user(user.pk).filter(group=group)
        if not members.exists():
            return None
        changed = sorted(members.unexpired().filter(read_at__isnull=True).select_for_update().values_list("id", flat=True))
        if changed:
            Notification.objects.filter(pk__in=changed).update(read_at=now, delivered_at=Coalesce("delivered_at", Value(now)))
            seq = journal.stamp(user.pk, changed)
            unread = notification_unread_count(user_id=user.pk)
            delivery.publish_on_commit(NotificationsRead(user_id=user.pk, ids=changed, read=True, unread=unread, seq=seq))
    return changed
