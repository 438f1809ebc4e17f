"""
The feed's views (issue 21, docs/feed.md "Keys, groups, states and actions"): retract by key, the
grouped list, a group read, seen, archive and unarchive, an action's click, the unseen badge.
Thin as the others: validate, call a service or a selector, answer.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from inbox import selectors
from inbox.conf import inbox_setting
from inbox.models import ExternalRecipient
from inbox.payloads import notification_payload
from inbox.services import feed_state, groups
from inbox.services import keys as feed_keys

from .keys import request_key
from .pagination import id_param as _int_param
from .serializers import NotificationSerializer
from .throttles import ReadThrottle, SendThrottle

MAX_ID = 2**63 - 1

LIST_PARAMETERS = [
    OpenApiParameter("archived", OpenApiTypes.BOOL, description="Only archived notifications (true); default: only the others."),
    OpenApiParameter(
        "grouped", OpenApiTypes.BOOL,
        description="One entry per group, newest first (count, unread_count, actors, latest); paged by before/upto.",
    ),
    OpenApiParameter("before", OpenApiTypes.INT, description="grouped: the next page's position (from 'next')."),
    OpenApiParameter("upto", OpenApiTypes.INT, description="grouped: the listing's snapshot (from 'next')."),
]




def grouped_list(request, *, category):
    """``GET /api/notifications/?grouped=true``: a page of entries, ``next`` a link to the following one."""
    raw = request.query_params.get("page_size")
    size = 20
    if raw not in (None, ""):
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:
            raise ValidationError({"page_size": ["Must be an integer between 1 and 100."]})
        size = int(raw)
    page = groups.notification_groups_for_user(
        user=request.user, limit=size, before=_int_param(request, "before"), upto=_int_param(request, "upto"), category=category
    )
    next_url = None
    if page.before is not None:
        query = request.query_params.copy()
        query["before"], query["upto"] = str(page.before), str(page.upto)
        next_url = request.build_absolute_uri(request.path) + "?" + query.urlencode()
    return Response({"next": next_url, "previous": None, "results": page.entries})


def unread_count_body(request) -> dict:
    """``GET /api/notifications/unread-count/[?count=unread|unseen]``: unread always; unseen when asked."""
    kind = request.query_params.get("count") or "unread"
    if kind not in ("unread", "unseen"):
        raise ValidationError({"count": ["Must be 'unread' or 'unseen'."]})
    unread = selectors.notification_unread_count(user_id=request.user.pk)
    if kind == "unread":
        return {"unread": unread}
    unseen = selectors.notification_unseen_count(user_id=request.user.pk)
    return {"unread": unread, "unseen": unseen, "count": unseen}


class RetractByKeyView(APIView):
    """
    ``DELETE /api/notifications/by-key/<key>/[?recipient=<user id>|?external_id=<id>]``: the
    sender's side. An API key with the ``send`` scope retracts any sender's notifications of the
    key; a user allowed to send (a token) only those it sent.
    """

    throttle_classes = [SendThrottle]

    def get_permissions(self):
        from .views import CanSendNotifications  # the send's own permission (views imports this module)

        return [permissions.IsAuthenticated(), CanSendNotifications()]

    @extend_schema(
        parameters=[
            OpenApiParameter("recipient", OpenApiTypes.INT, description="Only this recipient's (a user id)."),
            OpenApiParameter("external_id", OpenApiTypes.STR, description="Only this recipient's (the product's id)."),
        ],
        responses={
            200: inline_serializer("RetractResult", {"retracted": serializers.DictField(child=serializers.ListField(child=serializers.IntegerField()))}),
            400: OpenApiResponse(description="A bad key or recipient, named"),
            403: OpenApiResponse(description="Not allowed to send: the key lacks the send scope, or the user the permission."),
        },
        summary="Retract notifications by their key",
    )
    def delete(self, request, key):
        try:
            feed_keys.validate_key(key)
        except DjangoValidationError as exc:
            raise ValidationError({"key": exc.messages}) from None
        recipient = _int_param(request, "recipient")
        external_id = request.query_params.get("external_id")
        if recipient is not None and external_id is not None:
            raise ValidationError({"recipient": ["Give 'recipient' or 'external_id', not both."]})
        recipient_ids = None
        if recipient is not None:
            recipient_ids = [recipient]
        elif external_id is not None:
            if not 0 < len(external_id) <= 255 or "\x00" in external_id:
                raise ValidationError({"external_id": ["An external id is a string of 1 to 255 characters without NUL."]})
            found = ExternalRecipient.objects.filter(external_id=external_id).values_list("user_id", flat=True).first()
            if found is None:
                raise Http404
            recipient_ids = [found]
        sender = None if request_key(request) is not None else request.user
        done = feed_keys.notification_retract(key=key, recipient_ids=recipient_ids, sender=sender)
        if not done:
            raise Http404
        return Response({"retracted": {str(uid): ids for uid, ids in done.items()}})


class GroupReadView(APIView):
    throttle_classes = [ReadThrottle]

    @extend_schema(request=None, responses={200: inline_serializer("GroupReadResult", {"updated": serializers.IntegerField(), "unread": serializers.IntegerField()}), 400: OpenApiResponse(description="A bad group")}, summary="Mark a group of my notifications read")
    def post(self, request, group):
        try:
            feed_keys.validate_group(group)
        except DjangoValidationError as exc:
            raise ValidationError({"group": exc.messages}) from None
        changed = groups.notification_group_mark_read(user=request.user, group=group)
        if changed is None:
            raise Http404
        return Response({"updated": len(changed), "unread": selectors.notification_unread_count(user_id=request.user.pk)})


class StateRequestSerializer(serializers.Serializer):
    """``{"ids": [...]}``, or ``{"all": true}`` with an optional filter."""

    ids = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, allow_empty=False)
    all = serializers.BooleanField(required=False, default=False)
    category = serializers.SlugField(max_length=50, required=False)
    read = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate(self, attrs):
        unknown = [str(k)[:100] for k in self.initial_data if k not in self.fields]
        if unknown:
            raise serializers.ValidationError({k: ["Unknown field."] for k in unknown})
        if ("ids" in attrs) == bool(attrs["all"]):
            raise serializers.ValidationError({"ids": ["Give either 'ids' or \"all\": true."]})
        limit = inbox_setting("MAX_IDS_PER_REQUEST")
        if "ids" in attrs and len(attrs["ids"]) > limit:
            raise serializers.ValidationError({"ids": [f"At most {limit} ids per request."]})
        return attrs


def _state_request(request) -> dict:
    data = request.data
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    s = StateRequestSerializer(data=data)
    s.is_valid(raise_exception=True)
    return s.validated_data


STATE_RESULT = inline_serializer(
    "StateResult", {"updated": serializers.ListField(child=serializers.IntegerField()), "unread": serializers.IntegerField(), "unseen": serializers.IntegerField()}
)


def _state_result(request, changed) -> Response:
    user_id = request.user.pk
    return Response({
        "updated": changed,
        "unread": selectors.notification_unread_count(user_id=user_id),
        "unseen": selectors.notification_unseen_count(user_id=user_id),
    })


class SeenView(APIView):
    throttle_classes = [ReadThrottle]

    @extend_schema(request=StateRequestSerializer, responses={200: STATE_RESULT}, summary="Mark my notifications seen")
    def post(self, request):
        v = _state_request(request)
        if v.get("read") is not None:
            raise ValidationError({"read": ["The seen filter is 'category' only."]})
        changed = feed_state.notification_mark_seen(user=request.user, ids=v.get("ids"), category=v.get("category"))
        return _state_result(request, changed)


class ArchiveView(APIView):
    throttle_classes = [ReadThrottle]
    archived = True

    @extend_schema(request=StateRequestSerializer, responses={200: STATE_RESULT}, summary="Archive my notifications (read and seen)")
    def post(self, request):
        v = _state_request(request)
        changed = feed_state.notification_set_archived(
            user=request.user, archived=self.archived, ids=v.get("ids"), category=v.get("category"), read=v.get("read")
        )
        return _state_result(request, changed)


class UnarchiveView(ArchiveView):
    archived = False

    @extend_schema(request=StateRequestSerializer, responses={200: STATE_RESULT}, summary="Take my notifications out of the archive")
    def post(self, request):
        return super().post(request)


class InteractView(APIView):
    throttle_classes = [ReadThrottle]

    @extend_schema(
        request=inline_serializer("InteractRequest", {"action": serializers.IntegerField(min_value=0, max_value=1)}),
        responses={200: NotificationSerializer},
        summary="Record a click on one of a notification's actions",
    )
    def post(self, request, pk):
        data = request.data
        action = data.get("action") if isinstance(data, dict) else None
        if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action <= 1:
            raise ValidationError({"action": ["The index of an action: 0 or 1."]})
        if pk > MAX_ID:
            raise Http404
        try:
            n = feed_state.notification_interact(user=request.user, notification_id=pk, action=action)
        except feed_state.NoSuchAction:
            raise ValidationError({"action": ["This notification has no such action."]}) from None
        if n is None:
            raise Http404
        return Response(notification_payload(n), status=status.HTTP_200_OK)
