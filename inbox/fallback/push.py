"""
Web Push, the carrier: VAPID (RFC 8292) and the encrypted payload (RFC 8291, aes128gcm) through
pywebpush, to the push service of each of a person's browsers. No vendor: the push services are the
browsers' own (FCM for Chrome, Mozilla's for Firefox, Apple's, Microsoft's).

A push service that answers 404 or 410 has dropped the subscription: it is deleted. 429, 5xx and
network errors are the service being unavailable: when no subscription took the push, the task is
tried again later (``PushUnavailable``); one that took it is enough (no second push to it).
"""

from __future__ import annotations

import base64
import functools
import logging
from dataclasses import dataclass

import orjson
import requests
from django.core import signing
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from ..conf import inbox_setting
from ..models import Notification, PushSubscription

logger = logging.getLogger(__name__)

#: A push message carries at most 4,096 bytes, encryption included; the text is cut well below.
MAX_MESSAGE_CHARS = 1000


class PushUnavailable(Exception):
    """No push service took the message now (network, 5xx, 429): tried again later."""


@dataclass
class PushResult:
    delivered: int = 0
    gone: int = 0
    refused: int = 0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=4)
def _vapid(private_key: str) -> Vapid:
    return Vapid.from_raw(private_key.encode())


def configured() -> bool:
    return bool(inbox_setting("VAPID_PRIVATE_KEY"))


def vapid_public_key() -> str | None:
    """The application server key a page passes to ``pushManager.subscribe`` (base64url), or None."""
    if not configured():
        return None
    from cryptography.hazmat.primitives import serialization

    key = _vapid(inbox_setting("VAPID_PRIVATE_KEY")).public_key
    return b64url(key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


def subscriptions_for(*, user_id) -> list[PushSubscription]:
    return list(PushSubscription.objects.filter(user_id=user_id).order_by("id"))


ACK_SALT = "inbox.fallback.push-ack"


def ack_token(notification: Notification) -> str:
    """A signed token the service worker posts back (``POST /push/ack/``) once it showed the push."""
    return signing.dumps([notification.recipient_id, notification.pk], salt=ACK_SALT)


def read_ack_token(token: object) -> tuple[object, int]:
    """(user id, notification id); ``signing.BadSignature`` for a bad or stale token."""
    if not isinstance(token, str) or len(token) > 500:
        raise signing.BadSignature("not an ack token")
    value = signing.loads(token, salt=ACK_SALT, max_age=int(inbox_setting("PUSH_TTL_SECONDS")) + 7 * 24 * 3600)
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)):
        raise signing.BadSignature("not an ack token")
    return value[0], value[1]


def _ack_path() -> str:
    try:
        return reverse("inbox-push-ack")
    except NoReverseMatch:
        return "/push/ack/"


def payload(notification: Notification) -> bytes:
    """What the service worker gets (inbox/static/inbox/inbox-sw.js): the notification, shortened, and its ack token."""
    return orjson.dumps(
        {
            "type": "notification.created",
            "ack": ack_token(notification),
            # Where the ack goes: /push/ack/ on the service, under the host's prefix when a host
            # project includes inbox.urls (inbox/static/inbox/inbox-sw.js).
            "ack_url": _ack_path(),
            "notification": {
                "id": notification.pk,
                "title": notification.title,
                "message": notification.message[:MAX_MESSAGE_CHARS],
                "category": notification.category,
                "link": notification.link,
                "created_at": notification.created_at.isoformat().replace("+00:00", "Z"),
            },
        }
    )


_session = requests.Session()


def send(*, notification: Notification, subscriptions: list[PushSubscription]) -> PushResult:
    vapid = _vapid(inbox_setting("VAPID_PRIVATE_KEY"))
    data = payload(notification)
    result, unavailable = PushResult(), []
    for s in subscriptions:
        try:
            webpush(
                subscription_info={"endpoint": s.endpoint, "keys": {"p256dh": s.p256dh, "auth": s.auth}},
                data=data,
                vapid_private_key=vapid,
                vapid_claims={"sub": inbox_setting("VAPID_SUBJECT") or "mailto:inbox@localhost"},
                ttl=int(inbox_setting("PUSH_TTL_SECONDS")),
                timeout=float(inbox_setting("PUSH_TIMEOUT_SECONDS")),
                headers={"Topic": f"inbox-{notification.pk}", "Urgency": "normal"},
                requests_session=_session,
            )
        except WebPushException as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (404, 410):
                PushSubscription.objects.filter(pk=s.pk).delete()
                result.gone += 1
            elif status is None or status == 429 or status >= 500:
                unavailable.append(f"{status}: {str(exc)[:120]}")
            else:
                logger.warning("push service refused a push to subscription %s: %s", s.pk, str(exc)[:200])
                result.refused += 1
        except requests.RequestException as exc:
            unavailable.append(f"{type(exc).__name__}: {str(exc)[:120]}")
        else:
            result.delivered += 1
            PushSubscription.objects.filter(pk=s.pk).update(last_success_at=timezone.now())
    if not result.delivered and unavailable:
        raise PushUnavailable("; ".join(unavailable))
    return result
