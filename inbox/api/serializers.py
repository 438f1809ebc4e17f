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

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email

from inbox import services
from inbox.links import validate_link
from inbox.models import Notification
from inbox.payloads import notification_payload
from inbox.selectors import user_resolve_recipients
from inbox.services import keys as feed_keys
from inbox.services.recipients import MAX_EMAIL_LENGTH, MAX_EXTERNAL_ID_LENGTH, MAX_NAME_LENGTH, ExternalRef

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
            "key", "group", "actions", "seen_at", "archived_at", "interacted_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        return notification_payload(instance)

    @extend_schema_field({"type": "string", "anyOf": [{"format": "uri-reference"}, {"maxLength": 0}]})
    def get_link(self, instance) -> str:
        return instance.link


EXTERNAL_RECIPIENT_SCHEMA = {
    "type": "object",
    "description": (
        "A recipient named by the product's own id: created on the fly when unknown (an account that cannot "
        "sign in); a given email or name updates its profile."
    ),
    "properties": {
        "external_id": {"type": "string", "minLength": 1, "maxLength": MAX_EXTERNAL_ID_LENGTH},
        "email": {"type": "string", "format": "email", "maxLength": MAX_EMAIL_LENGTH, "nullable": True},
        "name": {"type": "string", "maxLength": MAX_NAME_LENGTH, "nullable": True},
    },
    "required": ["external_id"],
    "additionalProperties": False,
}
EXTERNAL_KEYS = ("external_id", "email", "name")


def external_ref(data: dict) -> ExternalRef:
    """
    ``{"external_id": ..., "email"?: ..., "name"?: ...}`` as an ExternalRef, or a ValidationError
    naming each bad key. ``email`` and ``name`` may be null or absent (leave the profile as is);
    ``""`` clears them.
    """
    errors = {}
    for key in data:
        if key not in EXTERNAL_KEYS:
            errors[str(key)[:100]] = ["Unknown field: a recipient object has external_id, email and name."]
    external_id = data.get("external_id")
    if "external_id" not in data:
        errors["external_id"] = ["This field is required."]
    elif type(external_id) is not str or not 0 < len(external_id) <= MAX_EXTERNAL_ID_LENGTH or "\x00" in external_id:
        errors["external_id"] = [f"An external id is a string of 1 to {MAX_EXTERNAL_ID_LENGTH} characters without NUL."]
    email, name = data.get("email"), data.get("name")
    if email is not None:
        if type(email) is not str or len(email) > MAX_EMAIL_LENGTH or "\x00" in email:
            errors["email"] = [f"An e-mail address is a string of at most {MAX_EMAIL_LENGTH} characters."]
        elif email:
            try:
                validate_email(email)
            except DjangoValidationError:
                errors["email"] = ["Enter a valid email address."]
    if name is not None and (type(name) is not str or len(name) > MAX_NAME_LENGTH or "\x00" in name):
        errors["name"] = [f"A name is a string of at most {MAX_NAME_LENGTH} characters without NUL."]
    if errors:
        raise serializers.ValidationError(errors)
    return ExternalRef(external_id, email, name)


@extend_schema_field(
    {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "maxLength": 150}, EXTERNAL_RECIPIENT_SCHEMA]}
)
class RecipientField(serializers.Field):
    """A user id (integer), a username (string), or the product's id (``{"external_id": ...}``)."""

    default_error_messages = {
        "invalid": "A recipient is a user id (integer), a username (string) or an object with an external_id."
    }

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            if not 1 <= data <= MAX_ID:
                self.fail("invalid")
            return data
        if isinstance(data, str) and 0 < len(data) <= 150 and "\x00" not in data:
            return data
        if isinstance(data, dict):
            return external_ref(data)
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
    recipient = RecipientField(
        required=False, help_text="One recipient: a user id, a username, or {\"external_id\", \"email\"?, \"name\"?}."
    )
    recipients = serializers.ListField(
        child=RecipientField(),
        required=False,
        allow_empty=False,
        max_length=inbox_setting("MAX_RECIPIENTS"),
        help_text=(
            f"Several recipients (at most {inbox_setting('MAX_RECIPIENTS')}); one bulk write. Ids, usernames and "
            "external-id objects may be mixed."
        ),
    )
    title = serializers.CharField(max_length=inbox_setting("MAX_TITLE_LENGTH"))
    message = serializers.CharField(
        max_length=inbox_setting("MAX_MESSAGE_LENGTH"), allow_blank=True, required=False, default="", trim_whitespace=False
    )
    category = serializers.SlugField(max_length=50, required=False, default="general")
    data = serializers.JSONField(required=False, default=dict, help_text="Free JSON object, at most 16 KiB.")
    # An http(s) URL or a path of the product's site ("/orders/5"): inbox/links.py says what is refused.
    link = serializers.CharField(max_length=2048, required=False, allow_blank=True, default="", validators=[validate_link])
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    # The feed's fields (issue 21, docs/feed.md "Keys, groups, states and actions").
    key = serializers.CharField(
        required=False, trim_whitespace=False, max_length=255,
        help_text="Per recipient: a later send with the same key updates that notification in place ([A-Za-z0-9._:-], 1-255).",
    )
    group = serializers.CharField(
        required=False, trim_whitespace=False, max_length=100,
        help_text="Notifications of one group are listed as one entry with ?grouped=true ([A-Za-z0-9._:-], 1-100).",
    )
    actions = serializers.JSONField(
        required=False, help_text='Up to two buttons: [{"label": <=40 chars, "url": a link} or {"label", "callback": a name}].'
    )
    mark_unread = serializers.BooleanField(
        required=False, default=True, help_text="An update by key makes the notification unread again unless false."
    )

    def validate_key(self, value):
        return feed_keys.validate_key(value)

    def validate_group(self, value):
        return feed_keys.validate_group(value)

    def validate_actions(self, value):
        return feed_keys.validate_actions(value)

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
        attrs["single"] = has_one
        attrs["external_refs"] = []
        external = [r for r in refs if type(r) is ExternalRef]
        if not external:  # ids and usernames only: the send path as it always was
            users, unknown = user_resolve_recipients(refs=refs)
            if unknown:
                raise unknown_recipients_error(field, unknown)
            attrs["recipient_users"] = users
            return attrs
        plain = [r for r in refs if type(r) is not ExternalRef]
        users, unknown = user_resolve_recipients(refs=plain) if plain else ([], [])
        if unknown:
            raise unknown_recipients_error(field, unknown)
        by_id = {u.pk: u for u in users}
        by_name = {u.username: u for u in users}
        attrs["recipient_plan"] = [
            r if type(r) is ExternalRef else (by_id[r] if isinstance(r, int) else by_name[r]) for r in refs
        ]
        known = services.recipients_known(external)
        if known is None:
            # Some must be created or updated: notification_fields() does it, in the send's transaction.
            attrs["external_refs"] = external
        else:
            attrs["recipient_users"] = _in_order(attrs["recipient_plan"], dict(zip((r.external_id for r in external), known)))
        return attrs

    @property
    def writes_recipients(self) -> bool:
        """Whether notification_fields() creates or updates recipients (then run it in the send's transaction)."""
        return bool(self.validated_data["external_refs"])

    def notification_fields(self) -> dict:
        """
        The validated send, as the keyword arguments of services.notification_create. Recipients
        named by external ids that this process does not know are created (or their profiles
        updated) here, last, after everything else was validated: inside the caller's transaction,
        a send refused later stores none of them.
        """
        v = self.validated_data
        users = v.get("recipient_users")
        if users is None:
            field = "recipient" if v["single"] else "recipients"
            try:
                found = services.recipients_ensure(v["external_refs"])
            except services.InvalidExternalId as exc:
                raise serializers.ValidationError({field: [str(exc)]}) from None
            users = _in_order(v["recipient_plan"], {u.external_id: u for u in found})
        fields = {
            "recipients": users,
            **{k: v[k] for k in ("title", "message", "category", "data", "link", "expires_at")},
        }
        if self.has_feed_fields:
            fields.update({k: v[k] for k in ("key", "group", "actions") if k in v}, mark_unread=v["mark_unread"])
        return fields

    @property
    def has_feed_fields(self) -> bool:
        """Whether the send has a key, a group or actions (then services.notification_send writes it)."""
        v = self.validated_data
        return bool(v.get("key") or v.get("group") or v.get("actions"))


def _in_order(plan, external_users: dict) -> list:
    """The recipients of ``plan`` (resolved users and ExternalRefs) in first-seen order, once each."""
    users, seen = [], set()
    for r in plan:
        u = external_users[r.external_id] if type(r) is ExternalRef else r
        if u.pk not in seen:
            seen.add(u.pk)
            users.append(u)
    return users


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
    created = serializers.ListField(child=serializers.IntegerField(), required=False, help_text="With a key: the ids that are new.")
    updated = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="With a key: the ids updated in place."
    )


class ReadAllSerializer(serializers.Serializer):
    category = serializers.SlugField(max_length=50, required=False)


class ReadAllResponseSerializer(serializers.Serializer):
    updated = serializers.IntegerField()
    unread = serializers.IntegerField()


class UnreadCountSerializer(serializers.Serializer):
    unread = serializers.IntegerField()
    unseen = serializers.IntegerField(required=False, help_text="With ?count=unseen: unseen and not archived.")
    count = serializers.IntegerField(required=False, help_text="With ?count=: the number asked for (the badge).")


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class UserIdField(serializers.Field):
    """A user's primary key: an integer as an integer; a UUID or a string key as a string."""

    def to_representation(self, value):
        return value if type(value) is int else str(value)


def user_id_json(value):
    """A primary key as JSON carries it (UserIdField's rule)."""
    return value if type(value) is int else str(value)


class MeSerializer(serializers.Serializer):
    id = UserIdField()
    username = serializers.CharField()
    external_id = serializers.CharField(allow_null=True, help_text="The product's id of this recipient; null for a local account.")
    can_send = serializers.BooleanField()


class RecipientProfileSerializer(serializers.Serializer):
    """The body of ``PUT /api/recipients/<external_id>/``: the profile to set (absent: leave as is)."""

    email = serializers.EmailField(max_length=MAX_EMAIL_LENGTH, required=False, allow_blank=True)
    name = serializers.CharField(max_length=MAX_NAME_LENGTH, required=False, allow_blank=True, trim_whitespace=False)

    def validate(self, attrs):
        unknown = [str(k)[:100] for k in self.initial_data if k not in self.fields]
        if unknown:
            raise serializers.ValidationError({k: ["Unknown field: a recipient's profile has email and name."] for k in unknown})
        return attrs


class RecipientSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    email = serializers.CharField(help_text="An e-mail address, or an empty string.")
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class UserTokenRequestSerializer(serializers.Serializer):
    """The body of ``POST /api/auth/user-token/``: the recipient (created if unknown) and its profile."""

    external_id = serializers.CharField(max_length=MAX_EXTERNAL_ID_LENGTH, trim_whitespace=False)
    email = serializers.EmailField(max_length=MAX_EMAIL_LENGTH, required=False, allow_blank=True, allow_null=True)
    name = serializers.CharField(max_length=MAX_NAME_LENGTH, required=False, allow_blank=True, allow_null=True, trim_whitespace=False)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            return super().to_internal_value(data)  # DRF's "Expected a dictionary"
        return external_ref(data)


class UserTokenSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="A JWT access token for the recipient (Authorization: Bearer, or the socket's token).")
    expires_at = serializers.DateTimeField()


class NotificationGroupEntrySerializer(serializers.Serializer):
    """One entry of ``GET /api/notifications/?grouped=true``: a group, or a notification of no group."""

    group = serializers.CharField(allow_null=True, help_text="The group; null for a notification of no group.")
    count = serializers.IntegerField(min_value=1)
    unread_count = serializers.IntegerField(min_value=0)
    actors = serializers.ListField(child=serializers.CharField(), help_text="The latest few actors, newest first.")
    latest = NotificationSerializer(help_text="The group's newest notification.")
