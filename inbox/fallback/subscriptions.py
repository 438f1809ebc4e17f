"""
Web Push subscriptions, written: a page's ``PushSubscription`` JSON checked whole (the API's 400
names the field) and stored for the signed-in person, or removed.

The endpoint is where the worker will POST, so it must be an https URL of a push service
(``INBOX["PUSH_SERVICE_HOSTS"]``); plain http only for a loopback host listed there (a test's push
service). The keys must be what RFC 8291 encrypts to: a P-256 public point (65 bytes) and a
16-byte authentication secret.
"""

from __future__ import annotations

import binascii
import ipaddress
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from django.db import transaction

from ..conf import inbox_setting
from ..models import PushSubscription
from .push import b64url_decode


class SubscriptionInvalid(ValueError):
    def __init__(self, errors: dict):
        super().__init__(errors)
        self.errors = errors


def _host_allowed(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == h or host.endswith("." + h) for h in (x.lower() for x in inbox_setting("PUSH_SERVICE_HOSTS")))


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_endpoint(endpoint: object) -> str | None:
    """The error message for a bad endpoint, None for a good one."""
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > 2048:
        return "Must be the subscription's endpoint URL (at most 2,048 characters)."
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "Must be a URL."
    if parts.username or parts.password or not host:
        return "Must be a URL."
    if not _host_allowed(host):
        return "Not a push service this server sends to (INBOX PUSH_SERVICE_HOSTS)."
    if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(host)):
        return "Must be an https URL."
    return None


def _key(value: object, length: int) -> bytes | None:
    if not isinstance(value, str) or len(value) > 200:
        return None
    try:
        raw = b64url_decode(value)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == length else None


def push_subscription_save(*, user, document: object, user_agent: str = "") -> PushSubscription:
    """Store (or move to this person, or refresh) the browser's subscription; the oldest beyond the limit go."""
    if not isinstance(document, dict):
        raise SubscriptionInvalid({"non_field_errors": ["Expected the PushSubscription JSON object."]})
    errors: dict = {}
    endpoint = document.get("endpoint")
    problem = check_endpoint(endpoint)
    if problem:
        errors["endpoint"] = [problem]
    keys = document.get("keys")
    if not isinstance(keys, dict):
        errors["keys"] = ['Must be {"p256dh": "...", "auth": "..."} (base64url).']
    else:
        key_errors = {}
        p256dh = _key(keys.get("p256dh"), 65)
        if p256dh is not None:
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
            except ValueError:
                p256dh = None
        if p256dh is None:
            key_errors["p256dh"] = ["Must be a P-256 public key (65 bytes, base64url)."]
        if _key(keys.get("auth"), 16) is None:
            key_errors["auth"] = ["Must be the 16-byte authentication secret (base64url)."]
        if key_errors:
            errors["keys"] = key_errors
    if errors:
        raise SubscriptionInvalid(errors)
    with transaction.atomic():
        subscription, _ = PushSubscription.objects.update_or_create(
            endpoint=endpoint,
            defaults={"user_id": user.pk, "p256dh": keys["p256dh"], "auth": keys["auth"], "user_agent": user_agent[:256]},
        )
        keep = list(
            PushSubscription.objects.filter(user_id=user.pk).order_by("-created_at", "-id").values_list("id", flat=True)[
                : inbox_setting("MAX_PUSH_SUBSCRIPTIONS")
            ]
        )
        PushSubscription.objects.filter(user_id=user.pk).exclude(id__in=keep).delete()
    return subscription


def push_subscription_delete(*, user, endpoint: object) -> bool:
    """Remove the person's subscription with this endpoint (the page unsubscribed). False: none of theirs."""
    if not isinstance(endpoint, str) or len(endpoint) > 2048:
        return False
    deleted, _ = PushSubscription.objects.filter(user_id=user.pk, endpoint=endpoint).delete()
    return bool(deleted)
