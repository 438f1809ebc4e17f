"""
What a fallback task does when it runs: decide from the notification's state and the person's
preferences now, claim what it sends in the transaction that decides it (a ``FallbackDelivery`` row,
unique per notification and channel), send, then record the outcome.

- Read (either channel) or acked (Web Push) or expired or deleted by then: nothing; that is the
  cancellation.
- A channel turned off or a category muted: recorded as skipped, never sent.
- Quiet hours: the same task again when they end.
- The SMTP server or the push service down: the claim is given back and the same task is enqueued
  again after ``policy.retry_delay(attempt)``, in one transaction, up to ``FALLBACK_MAX_ATTEMPTS``;
  then the claim is recorded as failed. A worker that dies between the claim and the send leaves
  the claim: that fallback is not sent (at most once).

The schedule's rows are batches (``run_push_batch``, ``run_email_batch``): one query sets aside
what no longer needs the channel (read, acked, expired, deleted, already done), which is nearly
everything in steady state; for Web Push, three more set aside the people nobody can push to (no
VAPID key, no subscription); the rest go one by one through ``run_push`` / ``run_email``, whose
postponements and retries are single-id tasks.
"""

from __future__ import annotations

import logging
import smtplib
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Case, CharField, Exists, OuterRef, Value, When
from django.utils import timezone

from ..conf import inbox_setting
from ..models import Channel, FallbackDelivery, Notification, PushSubscription
from ..preferences import Preferences, channel_decision, preferences_for_user, preferences_for_users
from . import policy

logger = logging.getLogger(__name__)

#: Most notifications one e-mail claims (it lists EMAIL_MAX_NOTIFICATIONS of them and counts the rest).
MAX_CLAIM = 1000

Status = FallbackDelivery.Status


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _later(task, *, when: datetime, **kwargs) -> None:
    task.using(run_after=when, backend=inbox_setting("FALLBACK_TASK_BACKEND")).enqueue(**kwargs)


def _record(notification_ids, channel: str, status: str, *, reason: str = "", attempts: int = 1) -> None:
    FallbackDelivery.objects.bulk_create(
        [FallbackDelivery(notification_id=nid, channel=channel, status=status, reason=reason[:64], attempts=attempts) for nid in notification_ids],
        ignore_conflicts=True,
    )


def recipient_address(user_id) -> str:
    """The person's e-mail address: their external recipient's, else their account's; "" for none."""
    row = (
        get_user_model()
        .objects.filter(pk=user_id, is_active=True)
        .values_list("email", "inbox_external__email")
        .first()
    )
    if row is None:
        return ""
    account, external = row
    return external or account or ""


def _common_checks(n: Notification | None, channel: str, now: datetime) -> dict | None:
    if n is None:
        return {"outcome": "gone"}
    if n.read_at is not None:
        return {"outcome": "read"}
    if channel == Channel.WEB_PUSH and n.delivered_at is not None:
        return {"outcome": "acked"}
    if n.is_expired(now):
        return {"outcome": "expired"}
    if FallbackDelivery.objects.filter(notification_id=n.pk, channel=channel).exists():
        return {"outcome": "already"}
    return None


def _held_back(n: Notification, preferences: Preferences, channel: str, now: datetime, task, attempt: int) -> dict | None:
    decision = channel_decision(preferences=preferences, category=n.category, channel=channel, now=now)
    if decision.allowed:
        return None
    if decision.reason == "quiet_hours":
        _later(task, when=decision.until, notification_id=n.pk, attempt=attempt)
        return {"outcome": "postponed", "until": _iso(decision.until)}
    _record([n.pk], channel, Status.SKIPPED, reason=decision.reason)
    return {"outcome": "skipped", "reason": decision.reason}


def _give_back(ids: list[int], channel: str, *, attempt: int, error: BaseException, task, trigger_id: int) -> dict:
    """A send failed: enqueue it again later (and free the claim) or, out of attempts, record the failure."""
    with transaction.atomic():
        if policy.may_retry(attempt):
            FallbackDelivery.objects.filter(notification_id__in=ids, channel=channel, status=Status.SENDING).delete()
            when = timezone.now() + timedelta(seconds=policy.retry_delay(attempt))
            _later(task, when=when, notification_id=trigger_id, attempt=attempt + 1)
            logger.warning("fallback %s for #%s failed (attempt %d): %s; again at %s", channel, trigger_id, attempt, error, when)
            return {"outcome": "retrying", "attempt": attempt, "at": _iso(when), "error": str(error)[:200]}
        FallbackDelivery.objects.filter(notification_id__in=ids, channel=channel, status=Status.SENDING).update(
            status=Status.FAILED, reason=type(error).__name__[:64]
        )
    logger.error("fallback %s for #%s gave up after %d attempts: %s", channel, trigger_id, attempt, error)
    return {"outcome": "failed", "attempt": attempt, "error": str(error)[:200]}


def _mark_sent(ids: list[int], channel: str) -> None:
    FallbackDelivery.objects.filter(notification_id__in=ids, channel=channel, status=Status.SENDING).update(
        status=Status.SENT, sent_at=timezone.now()
    )


# --- e-mail -------------------------------------------------------------------------------------


def _claim_email_batch(trigger: Notification, preferences: Preferences, now: datetime, attempt: int, render):
    """
    In one transaction: everything of the person still unread, unexpired and never e-mailed whose
    own e-mail is due within the trigger's window (Zulip's batching), claimed with ``sending``
    rows; those a preference drops are recorded as skipped. The message is rendered inside it
    (``render(batch)``), so a template or URL error claims nothing. Returns (batch, message);
    ([], None) if the trigger is no longer among them (read meanwhile, or another worker took it).
    """
    horizon = now + timedelta(seconds=policy.email_delay(trigger.category))
    emailed = FallbackDelivery.objects.filter(notification_id=OuterRef("pk"), channel=Channel.EMAIL)
    for _ in range(3):  # a concurrent claim of the same rows: look again
        try:
            with transaction.atomic():
                candidates = list(
                    Notification.objects.for_user(trigger.recipient_id)
                    .unread()
                    .unexpired(now)
                    .filter(created_at__lte=now)
                    .exclude(Exists(emailed))
                    .select_related("sender")
                    .select_for_update(of=("self",))
                    .order_by("-id")[:MAX_CLAIM]
                )
                if trigger.pk not in {c.pk for c in candidates}:
                    return [], None
                batch, skipped = [], []
                for c in candidates:
                    due = c.created_at + timedelta(seconds=policy.email_delay(c.category))
                    if c.pk != trigger.pk and due > horizon:
                        continue
                    decision = channel_decision(preferences=preferences, category=c.category, channel=Channel.EMAIL, now=now)
                    if decision.allowed:
                        batch.append(c)
                    elif decision.reason != "quiet_hours" and due <= now:
                        skipped.append(c.pk)
                FallbackDelivery.objects.bulk_create(
                    [FallbackDelivery(notification_id=c.pk, channel=Channel.EMAIL, status=Status.SENDING, attempts=attempt) for c in batch]
                )
                _record(skipped, Channel.EMAIL, Status.SKIPPED, reason="preference")
                return batch, render(batch)
        except IntegrityError:
            continue
    return [], None


def run_email(*, notification_id: int, attempt: int = 1) -> dict:
    from . import mail
    from .tasks import email_fallback

    now = timezone.now()
    n = Notification.objects.filter(pk=notification_id).first()
    done = _common_checks(n, Channel.EMAIL, now)
    if done is not None:
        return done
    preferences = preferences_for_user(user_id=n.recipient_id)
    held = _held_back(n, preferences, Channel.EMAIL, now, email_fallback, attempt)
    if held is not None:
        return held
    address = recipient_address(n.recipient_id)
    if not address:
        _record([n.pk], Channel.EMAIL, Status.SKIPPED, reason="no_address")
        return {"outcome": "skipped", "reason": "no_address"}
    batch, message = _claim_email_batch(
        n, preferences, now, attempt,
        lambda batch: mail.notifications_message(user_id=n.recipient_id, address=address, notifications=batch),
    )
    if not batch:
        return {"outcome": "already"}
    ids = sorted(c.pk for c in batch)
    try:
        message.send()
    except (smtplib.SMTPException, OSError) as exc:
        return _give_back(ids, Channel.EMAIL, attempt=attempt, error=exc, task=email_fallback, trigger_id=n.pk)
    _mark_sent(ids, Channel.EMAIL)
    return {"outcome": "sent", "ids": ids}


# --- Web Push -----------------------------------------------------------------------------------


def run_push(*, notification_id: int, attempt: int = 1) -> dict:
    from . import push
    from .tasks import push_fallback

    now = timezone.now()
    n = Notification.objects.select_related("sender").filter(pk=notification_id).first()
    done = _common_checks(n, Channel.WEB_PUSH, now)
    if done is not None:
        return done
    preferences = preferences_for_user(user_id=n.recipient_id)
    held = _held_back(n, preferences, Channel.WEB_PUSH, now, push_fallback, attempt)
    if held is not None:
        return held
    if not push.configured():
        return {"outcome": "not_configured"}
    subscriptions = push.subscriptions_for(user_id=n.recipient_id)
    if not subscriptions:
        return {"outcome": "no_subscription"}
    try:
        with transaction.atomic():
            FallbackDelivery.objects.create(notification_id=n.pk, channel=Channel.WEB_PUSH, status=Status.SENDING, attempts=attempt)
    except IntegrityError:
        return {"outcome": "already"}
    try:
        result = push.send(notification=n, subscriptions=subscriptions)
    except push.PushUnavailable as exc:
        return _give_back([n.pk], Channel.WEB_PUSH, attempt=attempt, error=exc, task=push_fallback, trigger_id=n.pk)
    if not result.delivered:
        FallbackDelivery.objects.filter(notification_id=n.pk, channel=Channel.WEB_PUSH).update(
            status=Status.FAILED, reason="gone" if result.gone and not result.refused else "refused"
        )
        return {"outcome": "undelivered", "gone": result.gone, "refused": result.refused}
    _mark_sent([n.pk], Channel.WEB_PUSH)
    return {"outcome": "sent", "subscriptions": result.delivered, "gone": result.gone}


# --- batches ------------------------------------------------------------------------------------

#: Errors a batch's result quotes (the log has them all).
MAX_QUOTED_ERRORS = 10


def _settled(ids: list[int], channel: str, now: datetime) -> tuple[list[int], Counter]:
    """
    In one query: which of ``ids`` still need ``channel`` now, and the others counted by why not,
    with the outcomes of ``_common_checks`` (read; acked, for Web Push; expired; already; gone).
    """
    settled = [When(read_at__isnull=False, then=Value("read"))]
    if channel == Channel.WEB_PUSH:
        settled.append(When(delivered_at__isnull=False, then=Value("acked")))
    settled += [
        When(expires_at__lte=now, then=Value("expired")),
        When(Exists(FallbackDelivery.objects.filter(notification_id=OuterRef("pk"), channel=channel)), then=Value("already")),
    ]
    rows = (
        Notification.objects.filter(pk__in=ids)
        .annotate(settled=Case(*settled, default=Value(""), output_field=CharField()))
        .values_list("pk", "settled")
    )
    done: Counter = Counter()
    pending = []
    for pk, outcome in rows:
        if outcome:
            done[outcome] += 1
        else:
            pending.append(pk)
    gone = len(ids) - len(pending) - sum(done.values())
    if gone:
        done["gone"] = gone
    return sorted(pending), done


def _sift_push(pending: list[int], now: datetime) -> tuple[list[int], Counter]:
    """
    Of ``pending``, the ones ``run_push`` has to see; the others counted as it would answer them
    (``not_configured``, ``no_subscription``), in four queries for the batch instead of four apiece.
    A push the person's preferences hold back goes through: ``run_push`` records or postpones it.
    """
    from . import push

    rows = list(Notification.objects.filter(pk__in=pending).values_list("pk", "recipient_id", "category"))
    recipients = {recipient for _, recipient, _ in rows}
    preferences = preferences_for_users(user_ids=recipients)
    configured = push.configured()
    subscribed = set(
        PushSubscription.objects.filter(user_id__in=recipients).values_list("user_id", flat=True).distinct()
    ) if configured else set()
    through, done = [], Counter()
    for pk, recipient, category in rows:
        if not channel_decision(preferences=preferences[recipient], category=category, channel=Channel.WEB_PUSH, now=now).allowed:
            through.append(pk)
        elif not configured:
            done["not_configured"] += 1
        elif recipient not in subscribed:
            done["no_subscription"] += 1
        else:
            through.append(pk)
    if len(rows) < len(pending):
        done["gone"] += len(pending) - len(rows)
    return through, done


def _run_batch(notification_ids: Sequence[int], channel: str, run: Callable[..., dict], sift=None) -> dict:
    ids = sorted({int(nid) for nid in notification_ids})
    now = timezone.now()
    pending, done = _settled(ids, channel, now)
    if sift is not None and pending:
        pending, sifted = sift(pending, now)
        done.update(sifted)
    errors = {}
    for nid in pending:
        try:
            outcome = run(notification_id=nid)["outcome"]
        except Exception as exc:  # one notification's failure does not hold back the rest of the batch
            logger.exception("fallback %s for #%s failed in its batch", channel, nid)
            outcome = "error"
            if len(errors) < MAX_QUOTED_ERRORS:
                errors[str(nid)] = f"{type(exc).__name__}: {exc}"[:200]
        done[outcome] += 1
    result = {"outcome": "batch", "ids": len(ids), "done": dict(sorted(done.items()))}
    if errors:
        result["errors"] = errors
    return result


def run_push_batch(*, notification_ids: Sequence[int]) -> dict:
    """Web Push for each of ``notification_ids`` that still needs one and can have one (``run_push``)."""
    return _run_batch(notification_ids, Channel.WEB_PUSH, run_push, sift=_sift_push)


def run_email_batch(*, notification_ids: Sequence[int]) -> dict:
    """
    The e-mail of each of ``notification_ids`` that still needs one (``run_email``): the first of a
    person's claims the others that are due, which then find themselves ``already`` sent.
    """
    return _run_batch(notification_ids, Channel.EMAIL, run_email)
