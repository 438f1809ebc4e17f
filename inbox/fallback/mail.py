"""
The e-mail of the fallback: one message for a batch of a person's unread notifications, rendered
from templates an operator can override (``inbox/email/subject.txt``, ``notifications.txt``,
``notifications.html``: put files of those names in a template directory ahead of the app's), sent
through Django's e-mail backend (``EMAIL_*`` settings). It carries ``List-Unsubscribe`` and
``List-Unsubscribe-Post`` (RFC 8058 one-click): the signed link turns e-mail off for the message's
categories for that person.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.core.exceptions import ImproperlyConfigured
from django.urls import NoReverseMatch, reverse

from ..conf import inbox_setting
from ..models import ExternalRecipient, Notification
from ..preferences import is_critical

UNSUBSCRIBE_SALT = "inbox.fallback.unsubscribe"


def unsubscribe_token(*, user_id, categories: Sequence[str]) -> str:
    """A signed, URL-safe token naming the person and the categories whose e-mail it turns off."""
    return signing.dumps({"u": user_id, "c": sorted(set(categories))}, salt=UNSUBSCRIBE_SALT, compress=True)


def read_unsubscribe_token(token: str) -> tuple[object, list[str]]:
    """(user id, categories) of a token; ``signing.BadSignature`` for anything else."""
    value = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    if not isinstance(value, dict) or not isinstance(value.get("c"), list) or "u" not in value:
        raise signing.BadSignature("not an unsubscribe token")
    return value["u"], [c for c in value["c"] if isinstance(c, str)]


def unsubscribe_path(*, user_id, categories: Sequence[str]) -> str:
    try:
        return reverse("inbox-unsubscribe", args=[unsubscribe_token(user_id=user_id, categories=categories)])
    except NoReverseMatch:
        raise ImproperlyConfigured(
            'The fallback e-mails need their unsubscribe URL: path("", include("inbox.fallback.urls")) in ROOT_URLCONF.'
        ) from None


def public_url(path: str) -> str:
    return inbox_setting("PUBLIC_URL").rstrip("/") + path


def notifications_message(*, user_id, address: str, notifications: Sequence[Notification]) -> EmailMultiAlternatives:
    newest_first = sorted(notifications, key=lambda n: n.pk, reverse=True)
    shown = newest_first[: inbox_setting("EMAIL_MAX_NOTIFICATIONS")]
    categories = sorted({n.category for n in notifications if not is_critical(n.category)})
    unsubscribe_url = public_url(unsubscribe_path(user_id=user_id, categories=categories)) if categories else ""
    name = ExternalRecipient.objects.filter(user_id=user_id).values_list("name", flat=True).first() or ""
    context = {
        "name": name,
        "count": len(notifications),
        "notifications": shown,
        "more": len(notifications) - len(shown),
        "categories": categories,
        "inbox_url": public_url("/"),
        "unsubscribe_url": unsubscribe_url,
    }
    subject = " ".join(render_to_string("inbox/email/subject.txt", context).split())[:200]
    headers = {"Auto-Submitted": "auto-generated"}
    if unsubscribe_url:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("inbox/email/notifications.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers=headers,
    )
    message.attach_alternative(render_to_string("inbox/email/notifications.html", context), "text/html")
    return message
