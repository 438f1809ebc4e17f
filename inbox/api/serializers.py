"""
Thin serializers: validate input, describe output for the OpenAPI schema. The output of a
notification is inbox.payloads.notification_payload, the same dict the WebSocket sends.
"""

import copy
import threading

from inbox.conf import inbox_setting
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
import orjson
from rest_framework import serializers

from inbox.models import Notification
from inbox.payloads import notification_payload
from inbox.selectors import user_resolve_recipients

MAX_ID = 2**63 - 1


class NotificationSerializer(serializers.ModelSerializer):
    sender = serializers.CharField(allow_null=True, help_text="Username of the sender, if any.")
    state = serializers.ChoiceField(choices=Notification.State.choices)
    # Documented as a URL or "" (no link): a URLField says format "uri", which "" is not.
    link = serializers.SerializerMethodField(help_text="A URL, or an empty string when there is no link.")

    class Meta:
        model = Notification
        fields = [
            "id", "recipient", "sender", "category", "title", "message", "data", "link",
            "created_at", "delivered_at", "read_at", "expires_at", "state",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        return notification_payload(instance)

    @extend_schema_field({"type": "string", "anyOf": [{"format": "uri"}, {"maxLength": 0}]})
    def get_link(self, instance) -> str:
        return instance.link


@extend_schema_field({"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "maxLength": 150}]})
class RecipientField(serializers.Field):
    """A user id (integer) or a username (string)."""

    default_error_messages = {"invalid": "A recipient is a user id (integer) or a username (string)."}

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            if not 1 <= data <= MAX_ID:
                self.fail("invalid")
            return data
        if isinstance(data, str) and 0 < len(data) <= 150 and "\x00" not in data:
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


def _check_json_value(value, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise serializers.ValidationError(f"'data' is nested deeper than {max_depth} levels.")
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError("'data' may not contain NUL characters.")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_json_value(k, depth, max_depth)
            _check_json_value(v, depth + 1, max_depth)
    elif isinstance(value, list):
        for v in value:
            _check_json_value(v, depth + 1, max_depth)


def unknown_recipients_error(field: str, refs) -> serializers.ValidationError:
    """The 400 of a send naming recipients that are not active users."""
    shown = ", ".join(repr(r) for r in refs[:20]) + (" ..." if len(refs) > 20 else "")
    return serializers.ValidationError({field: [f"Unknown or inactive recipient(s): {shown}"]})


class NotificationSendSerializer(serializers.Serializer):
    recipient = RecipientField(required=False, help_text="One recipient: a user id or a username.")
    recipients = serializers.ListField(
        child=RecipientField(),
        required=False,
        allow_empty=False,
        max_length=inbox_setting("MAX_RECIPIENTS"),
        help_text=f"Several recipients (at most {inbox_setting('MAX_RECIPIENTS')}); one bulk write.",
    )
    title = serializers.CharField(max_length=inbox_setting("MAX_TITLE_LENGTH"))
    message = serializers.CharField(
        max_length=inbox_setting("MAX_MESSAGE_LENGTH"), allow_blank=True, required=False, default="", trim_whitespace=False
    )
    category = serializers.SlugField(max_length=50, required=False, default="general")
    data = serializers.JSONField(required=False, default=dict, help_text="Free JSON object, at most 16 KiB.")
    link = serializers.URLField(max_length=2048, required=False, allow_blank=True, default="")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate_data(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("'data' must be a JSON object.")
        _check_json_value(value, 0, inbox_setting("MAX_DATA_DEPTH"))
        try:
            size = len(orjson.dumps(value))
        except (TypeError, orjson.JSONEncodeError):
            raise serializers.ValidationError("'data' is not valid JSON.") from None
        if size > inbox_setting("MAX_DATA_BYTES"):
            raise serializers.ValidationError(f"'data' is {size} bytes; the limit is {inbox_setting('MAX_DATA_BYTES')}.")
        return value

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("'expires_at' must be in the future.")
        return value

    def validate(self, attrs):
        has_one, has_many = "recipient" in attrs, "recipients" in attrs
        if has_one == has_many:
            raise serializers.ValidationError({"recipient": ["Give either 'recipient' or 'recipients'."]})
        field = "recipient" if has_one else "recipients"
        refs = [attrs.pop("recipient")] if has_one else attrs.pop("recipients")
        users, unknown = user_resolve_recipients(refs=refs)
        if unknown:
            raise unknown_recipients_error(field, unknown)
        attrs["recipient_users"] = users
        attrs["single"] = has_one
        return attrs

    def notification_fields(self) -> dict:
        """The validated send, as the keyword arguments of services.notification_create."""
        v = self.validated_data
        return {
            "recipients": v["recipient_users"],
            **{k: v[k] for k in ("title", "message", "category", "data", "link", "expires_at")},
        }


_send_prototypes = threading.local()


def send_serializer(data) -> NotificationSendSerializer:
    """
    A NotificationSendSerializer for ``data`` that shares its fields with the other sends of this
    thread. DRF builds every serializer's fields anew (a deep copy of the declared ones) and then
    their validators, about 0.4 ms of a send's CPU (bench/JOURNAL.md, finding 26); a shallow copy of
    one serializer per thread keeps its bound fields, which hold no state of a validation: errors and
    validated data live on the copy.
    """
    prototype = getattr(_send_prototypes, "serializer", None)
    if prototype is None:
        prototype = NotificationSendSerializer()
        prototype.fields  # bound once, here
        _send_prototypes.serializer = prototype
    serializer = copy.copy(prototype)
    serializer.initial_data = data
    return serializer


class BulkSendResponseSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.IntegerField())


class ReadAllSerializer(serializers.Serializer):
    category = serializers.SlugField(max_length=50, required=False)


class ReadAllResponseSerializer(serializers.Serializer):
    updated = serializers.IntegerField()
    unread = serializers.IntegerField()


class UnreadCountSerializer(serializers.Serializer):
    unread = serializers.IntegerField()


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    can_send = serializers.BooleanField()
