from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

from .links import validate_link


class NotificationQuerySet(models.QuerySet):
    def for_user(self, user_id: int) -> "NotificationQuerySet":
        return self.filter(recipient_id=user_id)

    def unexpired(self, now=None) -> "NotificationQuerySet":
        now = now or timezone.now()
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))

    def unread(self) -> "NotificationQuerySet":
        return self.filter(read_at__isnull=True)


class Notification(models.Model):
    """
    One notification for one recipient.

    State is derived from two timestamps: ``pending`` (no client acknowledged it yet) →
    ``delivered`` (``delivered_at`` set by the first ack) → ``read`` (``read_at`` set).
    Ids increase with creation, and for one recipient they also increase in commit order
    (inbox.services takes a per-recipient lock before inserting), so "everything of mine
    after id N" is a catch-up query that never misses a late commit.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        READ = "read"

    id = models.BigAutoField(primary_key=True)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications", db_index=False
    )
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="sent_notifications"
    )
    category = models.SlugField(max_length=50, default="general", db_index=False)
    title = models.CharField(max_length=200)
    message = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    # An absolute http(s) URL or a path on the product's site ("/orders/5"): inbox/links.py.
    link = models.CharField(max_length=2048, blank=True, default="", validators=[validate_link])
    # Chosen by the sender, per recipient ("build-42"): a later send with the same key updates this
    # row in place, and the sender may retract it by its key.
    key = models.CharField(max_length=255, blank=True, default="", db_default="")
    # Notifications with the same group ("post-17-likes") are listed as one entry when asked.
    group = models.CharField(max_length=100, blank=True, default="", db_default="")
    # Up to two buttons: [{"label", "url" | "callback"}]; a click records interacted_at.
    actions = models.JSONField(default=list, blank=True, db_default=models.Value([], models.JSONField()))
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    seen_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    interacted_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # The recipient's change journal (inbox/journal.py): the sequence number of the last change to
    # this row (its creation, a read, an update...). Resuming ``?since=<seq>`` replays every row
    # whose ``seq`` is greater, and the tombstones of those deleted meanwhile, in ``seq`` order.
    seq = models.BigIntegerField(default=0, db_default=0)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        permissions = [("send_notification", "Can send notifications through the API")]
        indexes = [
            # A user's newest notifications, and a user's notifications after an id (both directions).
            models.Index(fields=["recipient", "id"], name="inbox_recipient_id"),
            # The category filter of the list.
            models.Index(fields=["recipient", "category", "id"], name="inbox_recipient_category_id"),
            # The unread filter, and SQLite's unread count: only unread rows are indexed; expires_at
            # is in the index so the count needs no table access.
            models.Index(
                fields=["recipient", "id", "expires_at"],
                name="inbox_unread",
                condition=Q(read_at__isnull=True),
            ),
            # The unread rows that expire, the part of the unread count a counter cannot keep (on
            # PostgreSQL the rest is the counter of store/sql/unread_counter.sql).
            models.Index(
                fields=["recipient", "expires_at"],
                name="inbox_unread_expiring",
                condition=Q(read_at__isnull=True, expires_at__isnull=False),
            ),
            # Pending (undelivered) notifications, sent on connect without ?after=.
            models.Index(fields=["recipient", "id"], name="inbox_pending", condition=Q(delivered_at__isnull=True)),
            # The change journal's replay: a user's rows changed after a sequence number.
            models.Index(fields=["recipient", "seq"], name="inbox_recipient_seq"),
            # The retention purge's expiry sweep (inbox/services/retention.py): only rows that expire.
            models.Index(fields=["expires_at"], name="inbox_expiry", condition=Q(expires_at__isnull=False)),
            # A group's members, newest first.
            models.Index(fields=["recipient", "group", "id"], name="inbox_recipient_group_id", condition=~Q(group="")),
        ]
        constraints = [
            # One live notification per recipient and key.
            models.UniqueConstraint(fields=["recipient", "key"], name="inbox_recipient_key", condition=~Q(key="")),
        ]

    def __str__(self) -> str:
        # Named by the recipient's username (``list_select_related`` loads it with the admin's
        # rows), the title cut short: it shows in the admin's breadcrumbs, messages and pickers.
        recipient = self.recipient if self.recipient_id is not None else None
        title = self.title if len(self.title) <= 60 else self.title[:59] + "…"
        return f"#{self.pk} to {recipient}: {title}"

    @property
    def state(self) -> str:
        if self.read_at is not None:
            return self.State.READ
        if self.delivered_at is not None:
            return self.State.DELIVERED
        return self.State.PENDING

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


class IdempotencyKey(models.Model):
    """
    The first response to a send with an ``Idempotency-Key`` header, replayed for retries.

    Keys are per sender. The row is inserted in the same transaction as the notifications, so a
    concurrent retry waits on the unique constraint and then replays the committed response. A send
    with no sender (``inbox.notify(sender=None)``, the host's own code) has its keys in one space of
    their own (the second constraint: NULLs are never equal in the first).
    """

    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(default=201)
    response_body = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sender", "key"], name="inbox_idempotency_sender_key"),
            models.UniqueConstraint(fields=["key"], condition=Q(sender__isnull=True), name="inbox_idempotency_senderless_key"),
        ]

    def __str__(self) -> str:
        return f"{self.sender_id}:{self.key}"


class TokenVersion(models.Model):
    """
    Which of a user's JWTs are still good: those whose ``token_version`` claim equals ``version``
    (a token without the claim counts as version 0, as does a user without a row).

    ``services.credentials_revoke`` adds one on a password change, a deactivation and on demand, so
    every token issued before stops working, access and refresh alike, without a denylist of tokens.
    The API's authentication and the socket compare it (inbox/directory.py, ``token_user``).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+")
    version = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user_id}: v{self.version}"


class ExternalRecipient(models.Model):
    """
    A person the product names by its own id (``external_id``: any string up to 255 characters, a
    UUID, an e-mail address, a number). Backed by a user account that cannot sign in with a password
    (an unusable one), so notifications, read state and the socket work for them as for anyone.
    Created on the fly by a send or a minted or host-signed token, provisioned ahead with
    ``PUT /api/recipients/<external_id>/``, erased with all its notifications by ``DELETE``.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="inbox_external"
    )
    external_id = models.CharField(max_length=255, unique=True)
    email = models.EmailField(max_length=254, blank=True, default="")
    name = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "external recipient"
        permissions = [("manage_recipients", "Can provision and erase recipients through the API")]

    def __str__(self) -> str:
        return self.external_id


class ServiceKey(AbstractAPIKey):
    """
    An API key of a service (djangorestframework-api-key: stored hashed, shown once, revocable).
    ``Authorization: Api-Key <key>`` authenticates as ``service``, the account the key acts for (the
    sender of its notifications, the owner of its idempotency keys); ``scopes`` say what it may do.
    """

    class Scope(models.TextChoices):
        SEND = "send", "send notifications"
        MINT = "mint", "mint tokens for recipients"
        RECIPIENTS = "recipients", "provision and erase recipients"

    service = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbox_service_keys")
    scopes = models.JSONField(default=list, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "service API key"
        verbose_name_plural = "service API keys"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


# --- Preferences and fallbacks (issue 20): appended here, read by inbox/preferences.py and inbox/fallback/ ---


class Channel(models.TextChoices):
    """The ways a notification reaches a person: the page (the socket), Web Push, e-mail."""

    IN_APP = "in_app", "in-app"
    WEB_PUSH = "web_push", "Web Push"
    EMAIL = "email", "e-mail"


class DeliveryProfile(models.Model):
    """
    A person's time zone and quiet hours (``quiet_start``-``quiet_end`` local time; a window that
    ends before it starts wraps midnight). Push and e-mail wait until quiet hours end; a person
    without a row has none, in UTC.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="inbox_delivery_profile"
    )
    time_zone = models.CharField(max_length=64, default="UTC")
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "delivery profile"

    def __str__(self) -> str:
        return f"{self.user_id}: {self.time_zone}"


class CategoryPreference(models.Model):
    """
    One person's choice for one category: each channel on or off, and a mute until a time (every
    channel but the stored in-app row). A person without a row for a category gets everything. An
    operator's critical categories (``INBOX["CRITICAL_CATEGORIES"]``) ignore these rows.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbox_category_preferences")
    category = models.SlugField(max_length=50)
    in_app = models.BooleanField(default=True)
    web_push = models.BooleanField(default=True)
    email = models.BooleanField(default=True)
    muted_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "category preference"
        constraints = [models.UniqueConstraint(fields=["user", "category"], name="inbox_category_preference_user_category")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.category}"


class FallbackDelivery(models.Model):
    """
    What a fallback did with one notification on one channel (Web Push, e-mail), written in the
    transaction that decided it: the unique constraint is what makes each fallback happen at most
    once, whichever worker runs the task and however often it is retried.

    ``sending`` is claimed (the message is being handed to the SMTP server or the push service),
    ``sent`` went out, ``skipped`` was not sent on purpose (a preference), ``failed`` gave up after
    ``INBOX["FALLBACK_MAX_ATTEMPTS"]``.
    """

    class Status(models.TextChoices):
        SENDING = "sending"
        SENT = "sent"
        SKIPPED = "skipped"
        FAILED = "failed"

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SENDING)
    attempts = models.PositiveSmallIntegerField(default=1)
    reason = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "fallback delivery"
        verbose_name_plural = "fallback deliveries"
        constraints = [
            models.UniqueConstraint(fields=["notification", "channel"], name="inbox_fallback_notification_channel")
        ]

    def __str__(self) -> str:
        return f"#{self.notification_id} {self.channel}: {self.status}"


class PushSubscription(models.Model):
    """
    One browser's Web Push subscription (the ``PushSubscription`` JSON a page gets from
    ``pushManager.subscribe``): where to POST (``endpoint``, a push service's URL) and the keys the
    payload is encrypted to (RFC 8291). A push service that answers 404 or 410 for it has dropped
    it, and so does Inbox.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbox_push_subscriptions")
    endpoint = models.URLField(max_length=2048, unique=True)
    p256dh = models.CharField(max_length=128)
    auth = models.CharField(max_length=64)
    user_agent = models.CharField(max_length=256, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    last_success_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "push subscription"
        indexes = [models.Index(fields=["user"], name="inbox_push_subscription_user")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.endpoint[:60]}"


class Tombstone(models.Model):
    """
    A notification that is gone (deleted, retracted by its key, expired, purged), kept in its
    recipient's change journal so a client that was away hears of it (``notification.deleted``).
    """

    class Reason(models.TextChoices):
        DELETED = "deleted"
        RETRACTED = "retracted"
        EXPIRED = "expired"

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    notification_id = models.BigIntegerField()
    seq = models.BigIntegerField()
    reason = models.CharField(max_length=16, choices=Reason.choices, default=Reason.DELETED)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["user", "seq"], name="inbox_tombstone_user_seq")]

    def __str__(self) -> str:
        return f"#{self.notification_id} {self.reason} (seq {self.seq})"


class JournalFloor(models.Model):
    """
    The oldest point of a user's change journal that can still be replayed: tombstones at or below
    ``seq`` were purged (retention), so a client resuming from before it is told to reset.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+")
    seq = models.BigIntegerField(default=0)
