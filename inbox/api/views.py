"""
Thin REST views: validate input, call a service or a selector, serialize the result.
Every query of notifications starts from request.user: another user's notification is a 404,
never a 403. Services act with API keys (inbox/api/keys.py: request.user is the key's service
account, request.auth the key and its scopes); the recipients and token-minting views at the end
serve them.
"""

import hashlib
import re
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone as dt_timezone

import orjson
from django.db import transaction
from django.http import Http404
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from inbox import directory, selectors, services
from inbox.conf import inbox_setting
from inbox.models import ExternalRecipient, IdempotencyKey
from inbox.payloads import notification_payload
from inbox.services.sending import notification_send

from .authentication import CheckedTokenRefreshSerializer, VersionedTokenObtainPairSerializer
from . import feed
from .keys import SEND, CanEraseRecipients, CanMintTokens, CanProvisionRecipients, ScopeOrPermission, request_key
from .pagination import NotificationCursorPagination, id_param as _id_param
from .serializers import (
    NotificationGroupEntrySerializer,
    BulkSendResponseSerializer,
    MeSerializer,
    NotificationSendSerializer,
    NotificationSerializer,
    ReadAllResponseSerializer,
    ReadAllSerializer,
    RecipientProfileSerializer,
    RecipientSerializer,
    UnreadCountSerializer,
    UserTokenRequestSerializer,
    UserTokenSerializer,
    send_serializer,
    unknown_recipients_error,
    user_id_json,
)
from .throttles import AuthThrottle, ReadThrottle, SendThrottle, password_check_slot

MAX_ID = 2**63 - 1
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
CATEGORY_RE = re.compile(r"^[-a-zA-Z0-9_]+\Z")


class CanSendNotifications(ScopeOrPermission):
    """
    API keys with the ``send`` scope (inbox/api/keys.py), and users holding
    ``inbox.send_notification``. A user's answer is kept per process for a few seconds
    (inbox/directory.py): has_perm costs two queries per send (bench/ profile: 5% of the server's CPU).
    """

    scope, perms, who = SEND, ("inbox.send_notification",), "sends notifications"
    refused_user_message = "You do not have permission to send notifications."

    def user_allowed(self, user) -> bool:
        allowed = directory.send_permissions.get(user.pk)
        if allowed is None:
            allowed = user.has_perm("inbox.send_notification")
            directory.send_permissions.set(user.pk, allowed)
        return allowed


def _bool_param(request, name):
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValidationError({name: ["Must be true or false."]})




def _own_notification(request, pk):
    if pk > MAX_ID:
        raise Http404
    n = selectors.notification_get_for_user(user=request.user, notification_id=pk)
    if n is None:
        raise Http404
    return n


class ReadThrottled:
    throttle_classes = [ReadThrottle]


LIST_PARAMETERS = [
    OpenApiParameter("unread", OpenApiTypes.BOOL, description="Only unread (true) or only read (false)."),
    OpenApiParameter("category", OpenApiTypes.STR, description="Only this category."),
    OpenApiParameter("after", OpenApiTypes.INT, description="Only ids strictly greater, oldest first (catch-up)."),
    OpenApiParameter("page_size", OpenApiTypes.INT, description="1 to 200; default 50."),
]

# The list's entries: notifications, or with ?grouped=true one entry per group.
LIST_ENTRY = PolymorphicProxySerializer(
    component_name="NotificationListEntry",
    serializers=[NotificationSerializer, NotificationGroupEntrySerializer],
    resource_type_field_name=None,
    many=True,
)

SEND_RESPONSE = PolymorphicProxySerializer(
    component_name="SendResult",
    serializers=[NotificationSerializer, BulkSendResponseSerializer],
    resource_type_field_name=None,
)


class NotificationListCreateView(GenericAPIView):
    serializer_class = NotificationSerializer
    pagination_class = NotificationCursorPagination

    def get_permissions(self):
        if self.request.method == "POST":
            return [permissions.IsAuthenticated(), CanSendNotifications()]
        return super().get_permissions()

    def get_throttles(self):
        return [SendThrottle()] if self.request.method == "POST" else [ReadThrottle()]

    def _category(self):
        category = self.request.query_params.get("category") or None
        if category is not None and (len(category) > 50 or not CATEGORY_RE.match(category)):
            # Categories are slugs (as on send and read-all); anything else, a NUL above all, would
            # reach PostgreSQL, which refuses NUL in text with an error (a 500).
            raise ValidationError({"category": ["A category is a slug of at most 50 letters, digits, '-' or '_'."]})
        return category

    def get_queryset(self):
        return selectors.notification_list_for_user(
            user=self.request.user,
            unread=_bool_param(self.request, "unread"),
            category=self._category(),
            after=_id_param(self.request, "after"),
            archived=bool(_bool_param(self.request, "archived")),
        )

    # many=True: a GenericAPIView without ListModelMixin is otherwise documented as a single object,
    # without the cursor parameter and with an operationId that collides with the detail view.
    @extend_schema(parameters=LIST_PARAMETERS + feed.LIST_PARAMETERS, responses=LIST_ENTRY, summary="List my notifications")
    def get(self, request):
        if _bool_param(request, "grouped"):
            return feed.grouped_list(request, category=self._category())
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([notification_payload(n) for n in page])

    @extend_schema(
        request=NotificationSendSerializer,
        responses={201: SEND_RESPONSE},
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, description="Retries with the same key return the first response.")],
        summary="Send a notification to one or many users",
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key")
        request_hash = None
        if key is not None:
            if not IDEMPOTENCY_KEY_RE.match(key):
                raise ValidationError({"Idempotency-Key": ["1 to 255 printable ASCII characters."]})
            request_hash = hashlib.sha256(orjson.dumps(request.data, option=orjson.OPT_SORT_KEYS)).hexdigest()
            previous = IdempotencyKey.objects.filter(sender=request.user, key=key).first()
            if previous is not None:
                return self._replay(previous, request_hash)

        serializer = send_serializer(request.data)
        serializer.is_valid(raise_exception=True)
        v = serializer.validated_data
        # With a key, the claim and the notifications commit together; recipients created for the send
        # (external ids) commit with it too, or not at all. Otherwise the service's own transaction is
        # all there is (a nested one would cost a savepoint and its release per send).
        with transaction.atomic() if key is not None or serializer.writes_recipients else nullcontext():
            claim = None
            if key is not None:
                claim = services.idempotency_key_claim(sender=request.user, key=key, request_hash=request_hash)
                if claim.replay:
                    return self._replay(claim.record, request_hash)
            response_status, updated = status.HTTP_201_CREATED, None
            try:
                if serializer.has_feed_fields:
                    # A key, a group or actions: the feed's path (inbox/store/keyed.py); it says what a key updated.
                    result = notification_send(sender=request.user, **serializer.notification_fields())
                    created, updated = result.notifications, result.updated
                    if v["single"] and updated:
                        response_status = status.HTTP_200_OK  # updated in place by its key
                else:
                    created = services.notification_create(sender=request.user, **serializer.notification_fields())
            except services.UnknownRecipients as exc:
                # Deactivated or deleted since this process last looked them up (inbox/directory.py).
                field = "recipient" if v["single"] else "recipients"
                services.recipients_forget(exc.recipients)  # an erased external id is created anew next time
                labels = [getattr(u, "external_id", "") or u.username for u in exc.recipients]
                raise unknown_recipients_error(field, labels) from None
            if v["single"]:
                body = notification_payload(created[0], sender_username=request.user.username)
            else:
                body = {"count": len(created), "ids": [n.id for n in created]}
                if "key" in v:
                    body["created"] = sorted(set(result.created))
                    body["updated"] = updated
            if claim is not None:
                services.idempotency_key_complete(record=claim.record, status=response_status, body=body)
        return Response(body, status=response_status)

    def _replay(self, record, request_hash):
        if record.request_hash != request_hash:
            raise services.IdempotencyConflict(record.key)
        return Response(record.response_body, status=record.response_status, headers={"Idempotent-Replayed": "true"})


class NotificationDetailView(ReadThrottled, APIView):
    @extend_schema(responses={200: NotificationSerializer}, summary="One of my notifications")
    def get(self, request, pk):
        return Response(notification_payload(_own_notification(request, pk)))

    @extend_schema(responses={204: None}, summary="Delete one of my notifications")
    def delete(self, request, pk):
        n = _own_notification(request, pk)
        services.notification_delete(user=request.user, ids=[n.pk])
        return Response(status=status.HTTP_204_NO_CONTENT)


class NotificationReadView(ReadThrottled, APIView):
    read = True

    @extend_schema(request=None, responses={200: NotificationSerializer}, summary="Mark one of my notifications read")
    def post(self, request, pk):
        n = _own_notification(request, pk)
        if self.read:
            services.notification_mark_read(user=request.user, ids=[n.pk])
        else:
            services.notification_mark_unread(user=request.user, ids=[n.pk])
        return Response(notification_payload(_own_notification(request, pk)))


class NotificationUnreadView(NotificationReadView):
    read = False

    @extend_schema(request=None, responses={200: NotificationSerializer}, summary="Mark one of my notifications unread")
    def post(self, request, pk):
        return super().post(request, pk)


class NotificationReadAllView(ReadThrottled, APIView):
    @extend_schema(request=ReadAllSerializer, responses={200: ReadAllResponseSerializer}, summary="Mark all my notifications read")
    def post(self, request):
        data = request.data or {}
        serializer = ReadAllSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        changed = services.notification_mark_all_read(user=request.user, category=serializer.validated_data.get("category"))
        return Response({"updated": len(changed), "unread": selectors.notification_unread_count(user_id=request.user.pk)})


class UnreadCountView(ReadThrottled, APIView):
    @extend_schema(responses={200: UnreadCountSerializer}, summary="How many of my notifications are unread")
    def get(self, request):
        return Response(feed.unread_count_body(request))


class MeView(ReadThrottled, APIView):
    @extend_schema(responses={200: MeSerializer}, summary="Who am I, and may I send")
    def get(self, request):
        u = request.user
        key = request_key(request)
        can_send = key.has_scope(SEND) if key is not None else u.has_perm("inbox.send_notification")
        external_id = ExternalRecipient.objects.filter(user_id=u.pk).values_list("external_id", flat=True).first()
        return Response({"id": user_id_json(u.pk), "username": u.get_username(), "external_id": external_id, "can_send": can_send})


# --- Recipients named by the product's ids --------------------------------------------------------

ERROR_DETAIL = {"$ref": "#/components/schemas/ErrorDetail"}  # inbox/api/schema.py defines it
RECIPIENT_ERRORS = {
    400: OpenApiResponse({"$ref": "#/components/schemas/ValidationErrors"}, description="The external id is longer than 255 characters."),
    403: OpenApiResponse(ERROR_DETAIL, description="The key lacks the scope, or the user the permission."),
    404: OpenApiResponse(ERROR_DETAIL, description="No recipient has this external id."),
}


def _external_id_or_400(external_id: str) -> str:
    try:
        return services.external_id_check(external_id)
    except services.InvalidExternalId as exc:
        raise ValidationError({"external_id": [str(exc)]}) from None


def _recipient_body(row) -> dict:
    return {
        "external_id": row.external_id, "email": row.email, "name": row.name,
        "created_at": row.created_at, "updated_at": row.updated_at,
    }


EXTERNAL_ID_PARAMETER = OpenApiParameter(
    "external_id", OpenApiTypes.STR, OpenApiParameter.PATH,
    description="The product's id of the recipient, URL-encoded (any characters, '/' as %2F; 1 to 255).",
)


class RecipientDetailView(APIView):
    """
    ``/api/recipients/<external_id>/``: provision or update (PUT), read (GET), erase (DELETE) a
    recipient named by the product's id. Only such recipients are reachable: a local account's
    username is a 404 here.
    """

    throttle_classes = [SendThrottle]

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [CanEraseRecipients()]
        return [CanProvisionRecipients()]

    @extend_schema(parameters=[EXTERNAL_ID_PARAMETER], responses={200: RecipientSerializer, **RECIPIENT_ERRORS}, summary="A recipient named by the product's id")
    def get(self, request, external_id):
        row = services.recipient_get(external_id=_external_id_or_400(external_id))
        if row is None:
            raise Http404
        return Response(_recipient_body(row))

    @extend_schema(
        parameters=[EXTERNAL_ID_PARAMETER],
        request=RecipientProfileSerializer,
        responses={200: RecipientSerializer, 201: RecipientSerializer, 403: RECIPIENT_ERRORS[403]},
        summary="Provision (201) or update (200) a recipient named by the product's id",
    )
    def put(self, request, external_id):
        external_id = _external_id_or_400(external_id)
        serializer = RecipientProfileSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        v = serializer.validated_data
        row, created = services.recipient_provision(external_id=external_id, email=v.get("email"), name=v.get("name"))
        return Response(_recipient_body(row), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(parameters=[EXTERNAL_ID_PARAMETER], responses={204: None, **RECIPIENT_ERRORS}, summary="Erase a recipient and all their notifications")
    def delete(self, request, external_id):
        if not services.recipient_erase(external_id=_external_id_or_400(external_id)):
            raise Http404
        return Response(status=status.HTTP_204_NO_CONTENT)


@method_decorator(never_cache, name="dispatch")
class UserTokenView(APIView):
    """
    ``POST /api/auth/user-token/``: a short-lived access token for a recipient named by the product's
    id (created if unknown), for a key with the ``mint`` scope. The product's backend calls this when
    its user opens a page, and hands the token to that page (REST and the socket take it as any
    other access token). It carries the recipient's token version, so erasing or deactivating the
    recipient revokes it.
    """

    throttle_classes = [SendThrottle]
    permission_classes = [CanMintTokens]

    @extend_schema(
        request=UserTokenRequestSerializer,
        responses={
            200: UserTokenSerializer,
            201: UserTokenSerializer,
            403: OpenApiResponse(ERROR_DETAIL, description="Not an API key with the 'mint' scope."),
            409: OpenApiResponse(ERROR_DETAIL, description="The recipient is deactivated."),
        },
        summary="Mint an access token for a recipient named by the product's id",
        auth=[{"apiKeyAuth": []}],
    )
    def post(self, request):
        serializer = UserTokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ref = serializer.validated_data  # an ExternalRef
        try:
            row, created = services.recipient_provision(external_id=ref.external_id, email=ref.email, name=ref.name)
        except services.InvalidExternalId as exc:
            raise ValidationError({"external_id": [str(exc)]}) from None
        user = row.user
        if not user.is_active:
            return Response({"detail": "This recipient is deactivated: no token can be minted for them."}, status=status.HTTP_409_CONFLICT)
        token = AccessToken.for_user(user)
        token.set_exp(lifetime=timedelta(seconds=inbox_setting("MINTED_TOKEN_SECONDS")))
        token[directory.TOKEN_VERSION_CLAIM] = directory.current_token_version(user.pk)
        expires_at = datetime.fromtimestamp(token["exp"], tz=dt_timezone.utc)
        return Response(
            {"access": str(token), "expires_at": expires_at.isoformat()},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


# Tokens are credentials: no cache may keep them (never_cache: Cache-Control: no-store, ...).
@method_decorator(never_cache, name="dispatch")
class TokenView(TokenObtainPairView):
    throttle_classes = [AuthThrottle]
    serializer_class = VersionedTokenObtainPairSerializer  # tokens carry the user's token_version

    def post(self, request, *args, **kwargs):
        # At most INBOX["PASSWORD_CHECKS"] password hashes at once per process; the rest get a 429.
        with password_check_slot():
            return super().post(request, *args, **kwargs)


@method_decorator(never_cache, name="dispatch")
class TokenRefresh(TokenRefreshView):
    """A refresh token of a deleted, inactive or revoked user (or naming no one) is a 401."""

    throttle_classes = [AuthThrottle]
    serializer_class = CheckedTokenRefreshSerializer
