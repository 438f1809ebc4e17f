"""
How long notifications and the change journal are kept: the retention keys of ``INBOX``, parsed and
checked once at start-up (``check_configuration``, from ``InboxConfig.ready``), so a bad value
stops the process with a message naming it instead of failing the first purge an hour later.

``INBOX["RETENTION_DAYS"]`` is one of

- ``None``: every notification is kept until its recipient or an operator deletes it (the default);
- a number of days for every category: ``90``;
- per category, ``"*"`` for the others: ``{"general": 30, "security": 365, "*": 90}``; a category
  whose value is ``None`` is kept forever (``{"security": None, "*": 90}``); without ``"*"`` the
  categories not named are kept forever.

The environment variable ``INBOX_RETENTION_DAYS`` says the same as text (``parse_retention_days``):
``90``, or ``general=30,security=365,*=90`` (``forever`` keeps a category: ``security=forever,*=90``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .conf import inbox_setting

DEFAULT = "*"
FOREVER = frozenset({"forever", "none", "never"})
# A category as Notification.category allows (a slug of up to 50 characters), or "*".
_CATEGORY = re.compile(r"^[-a-zA-Z0-9_]{1,50}$")
ENV_FORMAT = "a number of days (90) or category=days pairs separated by commas (general=30,security=365,*=90; forever keeps one)"

Rules = dict[str, "float | None"]


def _days(value: Any, *, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ImproperlyConfigured(f"{where}: {value!r} is not a number of days; give a positive number (30, 0.5) or None to keep forever.")
    return float(value)


def retention_rules(value: Any, *, name: str = 'INBOX["RETENTION_DAYS"]') -> Rules:
    """``RETENTION_DAYS`` as ``{category or "*": days or None}``; an empty dict keeps everything."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {DEFAULT: _days(value, where=name)}
    rules: Rules = {}
    for category, days in value.items():
        if not isinstance(category, str) or not (category == DEFAULT or _CATEGORY.match(category)):
            raise ImproperlyConfigured(f"{name}: {category!r} is not a category (a slug of up to 50 characters) nor '*' (every other category).")
        rules[category] = _days(days, where=f"{name}[{category!r}]")
    return rules


def positive_number(value: Any, *, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        more = "zero or more" if allow_zero else "more than zero"
        raise ImproperlyConfigured(f"{name} must be a number {more}, not {value!r}.")
    return float(value)


def parse_retention_days(raw: str, *, name: str = "INBOX_RETENTION_DAYS") -> float | dict[str, float | None] | None:
    """The text of ``INBOX_RETENTION_DAYS`` as the setting's value; empty keeps everything."""
    raw = raw.strip()
    if not raw or raw.lower() in FOREVER:
        return None
    if "=" not in raw:
        return _env_days(raw, name=name)
    rules: dict[str, float | None] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        category, sep, days = (part.strip() for part in item.partition("="))
        if not sep or not (category == DEFAULT or _CATEGORY.match(category)):
            raise ImproperlyConfigured(f"{name}: {item!r} is not category=days. Give {ENV_FORMAT}.")
        if category in rules:
            raise ImproperlyConfigured(f"{name}: {category!r} is given twice.")
        rules[category] = None if days.lower() in FOREVER else _env_days(days, name=f"{name} ({category})")
    return rules


def _env_days(text: str, *, name: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days <= 0:
        raise ImproperlyConfigured(f"{name}: {text!r} is not a number of days. Give {ENV_FORMAT}.")
    return days


def check_configuration() -> None:
    """Every retention key of INBOX, checked now (at start-up): an ImproperlyConfigured names the bad one."""
    retention_rules(inbox_setting("RETENTION_DAYS"))
    if inbox_setting("JOURNAL_RETENTION_DAYS") is not None:
        positive_number(inbox_setting("JOURNAL_RETENTION_DAYS"), name='INBOX["JOURNAL_RETENTION_DAYS"]')
    batch = inbox_setting("PURGE_BATCH_SIZE")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100_000:
        raise ImproperlyConfigured(f'INBOX["PURGE_BATCH_SIZE"] must be a whole number from 1 to 100,000, not {batch!r}.')
    positive_number(inbox_setting("PURGE_EVERY_SECONDS"), name='INBOX["PURGE_EVERY_SECONDS"]', allow_zero=True)
    positive_number(inbox_setting("EXPIRED_GRACE_SECONDS"), name='INBOX["EXPIRED_GRACE_SECONDS"]', allow_zero=True)
