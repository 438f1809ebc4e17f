"""
The fallbacks: Web Push and e-mail for a notification no device took (issue 20).

In-app comes first and is always stored. After a send, ``FallbackScheduler`` (a delivery backend,
listed in ``INBOX["DELIVERY_BACKENDS"]``) schedules durable tasks for it (django-tasks, database
backend: rows in the notifications' database, run by ``python manage.py inbox_worker``), one row per
channel and delay for everything sent together (up to 1,000 notifications a row):

- at ``+PUSH_AFTER_SECONDS`` (30): if no device acked it (``delivered_at``) and it is unread, one Web
  Push to the person's subscriptions;
- at ``+EMAIL_AFTER_SECONDS`` (900): if it is still unread, one e-mail listing everything of that
  person still unread and not yet e-mailed in the window (one message, as Zulip batches).

Each task reads the notification and the person's preferences when it runs, so an ack or a read
before then cancels it, a mute or a channel turned off drops it, and quiet hours postpone it. What
a fallback sent is recorded (``FallbackDelivery``, unique per notification and channel) in the
transaction that decided it: at most once, whichever worker runs it and however often it is retried.
A push service or SMTP server that fails is tried again later with backoff, a bounded number of times.
"""

from .scheduler import FallbackScheduler

__all__ = ["FallbackScheduler"]
