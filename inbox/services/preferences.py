"""
Preferences, written: a person's time zone, quiet hours and per-category channel switches and mutes.

``preferences_update`` takes the document of ``PUT /api/preferences/`` as parsed JSON and checks it
whole before writing anything: a bad field is a ``PreferencesInvalid`` that names it (the API's
400), and nothing is stored. The rule that a critical category cannot be turned off or muted lives
here, so every caller (the API, the unsubscribe link, the shell) meets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone as dt_timezone

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ..conf import inbox_setting
from ..models import CategoryPreference, DeliveryProfile
from ..preferences import CATEGORY_RE, CHANNELS, Preferences, is_critical, parse_clock, preferences_for_user, valid_time_zone

#: Categories one request may change (a person's preferences are a short list, not a data store).
MAX_CATEGORIES_PER_UPDATE = 100
_TOP_KEYS = {"time_zone", "quiet_hours", "categories"}
_CATEGORY_KEYS = {*CHANNELS, "muted_until"}


class PreferencesInvalid(ValueError):
    """The document cannot be stored; ``errors`` maps each bad field to its messages (DRF's shape)."""

    def __init__(self, errors: dict):
        super().__init__(errors)
        self.errors = errors


def _category_known(name: str) -> bool:
    allowed = inbox_setting("PREFERENCE_CATEGORIES")
    return allowed is None or name in allowed or is_critical(name)


def _parse_moment(value: object) -> datetime | None | str:
    """An ISO 8601 date-time (UTC when it names no offset), None, or the error message."""
    if value is None:
        return None
    try:
        parsed = parse_datetime(value) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:  # well formed, not a date: 2026-13-45T00:00:00
        parsed = None
    if parsed is None:
        return "Must be an ISO 8601 date-time (2026-01-31T18:00:00Z) or null."
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=dt_timezone.utc)
    return parsed


def _check_category(name: object, value: object, now: datetime) -> tuple[dict | None, list | dict | None]:
    """(the checked changes, or None to reset the category; the errors, or None)."""
    if not isinstance(name, str) or not CATEGORY_RE.match(name):
        return None, ["A category is a slug of 1 to 50 letters, digits, '-' or '_'."]
    if not _category_known(name):
        return None, ["Unknown category."]
    if value is None:
        return None, None
    if not isinstance(value, dict):
        return None, ['Must be an object such as {"email": false} or null.']
    errors: dict[str, list[str]] = {}
    changes: dict = {}
    for key, v in value.items():
        if key not in _CATEGORY_KEYS:
            errors[key] = [f"Unknown field; the channels are {', '.join(CHANNELS)}, and muted_until."]
        elif key == "muted_until":
            moment = _parse_moment(v)
            if isinstance(moment, str):
                errors[key] = [moment]
            else:
                changes[key] = moment
        elif not isinstance(v, bool):
            errors[key] = ["Must be true or false."]
        else:
            changes[key] = v
    if errors:
        return None, errors
    if is_critical(name):
        muted = changes.get("muted_until")
        if any(changes.get(c) is False for c in CHANNELS) or (muted is not None and muted > now):
            return None, [f"'{name}' is a critical category: it cannot be turned off or muted."]
    return changes, None


def preferences_update(*, user, document: object) -> Preferences:
    """
    Apply a ``PUT /api/preferences/`` document: ``time_zone`` (an IANA name), ``quiet_hours``
    (``{"start": "22:00", "end": "07:00"}`` or null), ``categories`` (``{"<category>": {<channel>:
    bool, "muted_until": date-time | null} | null}``; a category given changes only the fields
    given, null resets it to everything on). Keys left out stay as they are.
    """
    if not isinstance(document, dict):
        raise PreferencesInvalid({"non_field_errors": ["Expected a JSON object."]})
    now = timezone.now()
    errors: dict = {}
    for key in document.keys() - _TOP_KEYS:
        errors[key] = ["Unknown field; expected time_zone, quiet_hours, categories."]

    profile_changes: dict = {}
    if "time_zone" in document:
        if valid_time_zone(document["time_zone"]):
            profile_changes["time_zone"] = document["time_zone"]
        else:
            errors["time_zone"] = ['Must be an IANA time zone name, such as "Europe/Paris" or "UTC".']
    if "quiet_hours" in document:
        quiet = document["quiet_hours"]
        if quiet is None:
            profile_changes.update(quiet_start=None, quiet_end=None)
        elif not isinstance(quiet, dict) or set(quiet) != {"start", "end"}:
            errors["quiet_hours"] = ['Must be {"start": "HH:MM", "end": "HH:MM"} or null.']
        else:
            start, end = parse_clock(quiet["start"]), parse_clock(quiet["end"])
            if start is None or end is None:
                errors["quiet_hours"] = ['start and end are 24-hour times "HH:MM", such as "22:00" and "07:00".']
            elif start == end:
                errors["quiet_hours"] = ["start and end must differ (a window may wrap midnight: 22:00 to 07:00)."]
            else:
                profile_changes.update(quiet_start=start, quiet_end=end)

    category_changes: dict[str, dict | None] = {}
    if "categories" in document:
        categories = document["categories"]
        if not isinstance(categories, dict):
            errors["categories"] = ["Must be an object keyed by category."]
        elif len(categories) > MAX_CATEGORIES_PER_UPDATE:
            errors["categories"] = [f"At most {MAX_CATEGORIES_PER_UPDATE} categories per request."]
        else:
            category_errors = {}
            for name, value in categories.items():
                changes, problem = _check_category(name, value, now)
                if problem is not None:
                    category_errors[str(name)[:60]] = problem
                else:
                    category_changes[name] = changes
            if category_errors:
                errors["categories"] = category_errors
    if errors:
        raise PreferencesInvalid(errors)

    with transaction.atomic():
        if profile_changes:
            DeliveryProfile.objects.update_or_create(user_id=user.pk, defaults={**profile_changes, "updated_at": now})
        for name, changes in category_changes.items():
            if changes is None:
                CategoryPreference.objects.filter(user_id=user.pk, category=name).delete()
            else:
                CategoryPreference.objects.update_or_create(
                    user_id=user.pk, category=name, defaults={**changes, "updated_at": now}
                )
    return preferences_for_user(user_id=user.pk)


def category_channel_turn_off(*, user_id: int, category: str, channel: str) -> bool:
    """
    Turn one channel off for one category of one person (the e-mail's one-click unsubscribe).
    False, and nothing stored, for a critical category or a person who is gone.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if is_critical(category) or not get_user_model().objects.filter(pk=user_id).exists():
        return False
    with transaction.atomic():
        CategoryPreference.objects.update_or_create(
            user_id=user_id, category=category, defaults={channel: False, "updated_at": timezone.now()}
        )
    return True
