"""
``/api/push-subscriptions/``: the signed-in person's Web Push subscriptions. ``GET`` gives the
VAPID public key a page subscribes with and the endpoints stored; ``POST`` takes the browser's
``PushSubscription`` JSON (``subscription.toJSON()``); ``DELETE`` with ``{"endpoint": ...}`` removes one.
"""

from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from inbox.fallback import push
from inbox.fallback.subscriptions import SubscriptionInvalid, push_subscription_delete, push_subscription_save

from .throttles import ReadThrottle


def _subscription_json(s) -> dict:
    return {"endpoint": s.endpoint, "created_at": s.created_at.isoformat().replace("+00:00", "Z")}


@method_decorator(never_cache, name="dispatch")
class PushSubscriptionsView(APIView):
    throttle_classes = [ReadThrottle]

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="The VAPID public key, and my browsers' subscriptions")
    def get(self, request):
        return Response(
            {
                "vapid_public_key": push.vapid_public_key(),
                "subscriptions": [_subscription_json(s) for s in push.subscriptions_for(user_id=request.user.pk)],
            }
        )

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={201: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="A bad field, named"), 409: OpenApiResponse(description="Web Push is not configured on this server (code push_not_configured)")},
        summary="Store this browser's PushSubscription (subscription.toJSON())",
    )
    def post(self, request):
        if not push.configured():
            # A state of this server, not a failure: a client can tell it from GET ("configured") too.
            return Response(
                {"detail": "Web Push is not configured on this server.", "code": "push_not_configured"},
                status=status.HTTP_409_CONFLICT,
            )
        try:
            s = push_subscription_save(user=request.user, document=request.data, user_agent=request.META.get("HTTP_USER_AGENT", ""))
        except SubscriptionInvalid as e:
            raise ValidationError(e.errors) from None
        return Response(_subscription_json(s), status=status.HTTP_201_CREATED)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={204: None, 400: OpenApiResponse(description="No endpoint given, or not a string"), 404: None}, summary="Remove one of my subscriptions by endpoint")
    def delete(self, request):
        endpoint = request.data.get("endpoint") if isinstance(request.data, dict) else None
        if not isinstance(endpoint, str):
            raise ValidationError({"endpoint": ["Required: the subscription's endpoint URL."]})
        if not push_subscription_delete(user=request.user, endpoint=endpoint):
            return Response({"detail": "No subscription of yours has this endpoint."}, status=status.HTTP_404_NOT_FOUND)
        return Response(status=status.HTTP_204_NO_CONTENT)
