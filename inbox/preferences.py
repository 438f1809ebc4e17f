"""
Preferences, read: may a channel reach a person for a category now, and if not, when.

A person's choices are a ``DeliveryProfile`` (time zone, quiet hours) and a ``CategoryPreference``
per category they changed (each channel on or off, a mute until a time); no row means "everything,
in UTC, no quiet hours". The rules, in order:

1. A critical category (``INBOX["CRITICAL_CATEGORIES"]``, security notices) reaches every channel at
   once: no switch, mute or quiet hours holds it back (and the API refuses to set them).
2. A channel turned off for the category: never (``reason="off"``, ``until=None``).
3. A category muted until a time: not before then (``reason="muted"``); a fallback drops it.
4. Quiet hours (push and e-mail only; the in-app row is always stored and shown): not before they
   end in the person's time zone (``reason="quiet_hours"``); a fallback waits.

This module only reads, and it is read where the fallbacks run (the worker), never on the send
path: a send costs no query for preferences.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone as dt_timezone
from functools import lru_cache
from typing import NamedTuple

from django.utils import timezone

from .conf import inbox_setting
from .models import CategoryPreference, Channel, DeliveryProfile

CHANNELS: tuple[str, ...] = tuple(Channel.values)
CATEGORY_RE = re.compile(r"^[-a-zA-Z0-9_]{1,50}\Z")
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")


@dataclass(frozen=True, slots=True)
class CategoryChoice:
    in_app: bool = True
    web_push: bool = True
    email: bool = True
    muted_until: datetime | None = None

    def channel_on(self, channel: str) -> bool:
        return bool(getattr(self, channel))


EVERYTHING = CategoryChoice()


@dataclass(frozen=True, slots=True)
class Preferences:
    """One person's preferences, as the policy reads them."""

    user_id: int
    time_zone: str = "UTC"
    quiet_start: time | None = None
    quiet_end: time | None = None
    categories: Mapping[str, CategoryChoice] = field(default_factory=dict)

    def category(self, category: str) -> CategoryChoice:
        return self.categories.get(category, EVERYTHING)


class Decision(NamedTuple):
    """``allowed`` now; otherwise ``reason`` ("off", "muted", "quiet_hours") and ``until`` (None: never)."""

    allowed: bool
    reason: str = ""
    until: datetime | None = None


ALLOWED = Decision(True)


def critical_categories() -> frozenset[str]:
    return frozenset(inbox_setting("CRITICAL_CATEGORIES") or ())


def is_critical(category: str) -> bool:
    return category in critical_categories()


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def valid_time_zone(name: object) -> bool:
    """An IANA zone name this machine knows ("Europe/Paris", "UTC"); never a path."""
    return isinstance(name, str) and name in _time_zones()


def parse_clock(value: object) -> time | None:
    """ "HH:MM" (24 h) to a time; None for anything else."""
    if not isinstance(value, str):
        return None
    m = TIME_RE.match(value)
    return time(int(m.group(1)), int(m.group(2))) if m else None


def preferences_for_users(*, user_ids: Iterable[int]) -> dict[int, Preferences]:
    """Several people's preferences in two queries (a person with no rows gets the defaults)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    profiles = {p.user_id: p for p in DeliveryProfile.objects.filter(user_id__in=ids)}
    choices: dict[int, dict[str, CategoryChoice]] = {}
    for row in CategoryPreference.objects.filter(user_id__in=ids).values_list(
        "user_id", "category", "in_app", "web_push", "email", "muted_until"
    ):
        uid, category, in_app, web_push, email, muted_until = row
        choices.setdefault(uid, {})[category] = CategoryChoice(in_app, web_push, email, muted_until)
    found = {}
    for uid in ids:
        p = profiles.get(uid)
        found[uid] = Preferences(
            user_id=uid,
            time_zone=p.time_zone if p is not None else "UTC",
            quiet_start=p.quiet_start if p is not None else None,
            quiet_end=p.quiet_end if p is not None else None,
            categories=choices.get(uid, {}),
        )
    return found


def preferences_for_user(*, user_id: int) -> Preferences:
    return preferences_for_users(user_ids=[user_id])[user_id]


def quiet_hours_end(*, preferences: Preferences, now: datetime | None = None) -> datetime | None:
    """When the person's quiet hours end if ``now`` is inside them (UTC), else None."""
    start, end = preferences.quiet_start, preferences.quiet_end
    if start is None or end is None or start == end:
        return None
    now = now or timezone.now()
    tz = zoneinfo.ZoneInfo(preferences.time_zone) if valid_time_zone(preferences.time_zone) else dt_timezone.utc
    local = now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    # A wall time that a DST change skips resolves forward, as zoneinfo does with fold=0.
    return datetime.combine(day, end, tzinfo=tz).astimezone(dt_timezone.utc)


def channel_decision(
    *, preferences: Preferences, category: str, channel: str, now: datetime | None = None
) -> Decision:
    """May ``channel`` reach this person for ``category`` at ``now``; if not, why and until when."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if is_critical(category):
        return ALLOWED
    now = now or timezone.now()
    choice = preferences.category(category)
    if not choice.channel_on(channel):
        return Decision(False, "off", None)
    if choice.muted_until is not None and choice.muted_until > now:
        return Decision(False, "muted", choice.muted_until)
    if channel != Channel.IN_APP:
        end = quiet_hours_end(preferences=preferences, now=now)
        if end is not None:
            return Decision(False, "quiet_hours", end)
    return ALLOWED


def preferences_payload(preferences: Preferences, *, now: datetime | None = None) -> dict:
    """The JSON shape of ``GET /api/preferences/`` (expired mutes are shown as none)."""
    now = now or timezone.now()
    quiet = None
    if preferences.quiet_start is not None and preferences.quiet_end is not None:
        quiet = {"start": preferences.quiet_start.strftime("%H:%M"), "end": preferences.quiet_end.strftime("%H:%M")}
    categories = {}
    for name in sorted(preferences.categories):
        c = preferences.categories[name]
        muted = c.muted_until if c.muted_until is not None and c.muted_until > now else None
        categories[name] = {
            "in_app": c.in_app,
            "web_push": c.web_push,
            "email": c.email,
            "muted_until": muted.isoformat().replace("+00:00", "Z") if muted else None,
        }
    return {
        "time_zone": preferences.time_zone,
        "quiet_hours": quiet,
        "categories": categories,
        "critical_categories": sorted(critical_categories()),
        "channels": list(CHANNELS),
    }
