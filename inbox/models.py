from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey


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
    link = models.URLField(max_length=2048, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        permissions = [("send_notification", "Can send notifications through the API")]
        indexes = [
            # A user's newest notifications, and a user's notifications after an id (both directions).
            models.Index(fields=["recipient", "id"], name="inbox_recipient_id"),
            # The category filter of the list.
            models.Index(fields=["recipient", "category", "id"], name="inbox_recipient_category_id"),
            # The unread count and the unread filter: only unread rows are indexed; expires_at is
            # in the index so the count needs no table access.
            models.Index(
                fields=["recipient", "id", "expires_at"],
                name="inbox_unread",
                condition=Q(read_at__isnull=True),
            ),
            # Pending (undelivered) notifications, sent on connect without ?after=.
            models.Index(fields=["recipient", "id"], name="inbox_pending", condition=Q(delivered_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} to {self.recipient_id}: {self.title}"

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
    concurrent retry waits on the unique constraint and then replays the committed response.
    """

    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(default=201)
    response_body = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sender", "key"], name="inbox_idempotency_sender_key")]

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
