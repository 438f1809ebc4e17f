"""
What a notification's ``link`` may be: an http(s) URL, or a path of the product's own site.

A product links to its own pages (``/orders/5``) far more often than elsewhere; the client opens a
path relative to the page that shows it. A path is refused when a browser would read it as
something else: ``//evil.example`` is another host (a scheme-relative URL), a backslash is a slash
to browsers (``/\\evil.example`` too), and control characters or spaces are stripped or split by
URL parsers. ``javascript:`` and every other scheme are refused because only http and https pass.
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

MAX_LENGTH = 2048
MESSAGE = "Enter an http(s) URL or a path that starts with a single '/' (no backslashes, spaces or control characters)."

_http_url = URLValidator(schemes=["http", "https"])


def validate_link(value: str) -> None:
    """Raise ValidationError unless ``value`` is "" (no link), an http(s) URL, or a safe site path."""
    if not value:
        return
    if value.startswith("/"):
        if value.startswith("//") or not _plain(value):
            raise ValidationError(MESSAGE, code="invalid_link")
        return
    try:
        _http_url(value)
    except ValidationError:
        raise ValidationError(MESSAGE, code="invalid_link") from None


def _plain(path: str) -> bool:
    """No backslash, no whitespace, no control or format character (C*: NUL, DEL, U+202E...)."""
    return not any(ch == "\\" or ch.isspace() or unicodedata.category(ch).startswith("C") for ch in path)
