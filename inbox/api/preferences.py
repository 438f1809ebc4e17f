"""
``GET``/``PUT /api/preferences/``: the signed-in person's own preferences (inbox/preferences.py
says what they mean). The view is thin: the service checks the document whole and names each bad
field; nothing is stored from a document with one.
"""

from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from inbox.preferences import preferences_for_user, preferences_payload
from inbox.services.preferences import PreferencesInvalid, preferences_update

from .throttles import ReadThrottle

EXAMPLE = {
    "time_zone": "Europe/Paris",
    "quiet_hours": {"start": "22:00", "end": "07:00"},
    "categories": {"marketing": {"email": False, "web_push": False}, "order": {"muted_until": "2026-01-31T18:00:00Z"}},
}


@method_decorator(never_cache, name="dispatch")
class PreferencesView(APIView):
    throttle_classes = [ReadThrottle]

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT},
        summary="My preferences: time zone, quiet hours, and per category each channel on or off and a mute",
    )
    def get(self, request):
        return Response(preferences_payload(preferences_for_user(user_id=request.user.pk)))

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="A bad field, named")},
        examples=[OpenApiExample("quiet hours and a muted category", value=EXAMPLE, request_only=True)],
        summary="Change my preferences (keys left out stay as they are; a category set to null is reset)",
    )
    def put(self, request):
        try:
            preferences = preferences_update(user=request.user, document=request.data)
        except PreferencesInvalid as e:
            raise ValidationError(e.errors) from None
        return Response(preferences_payload(preferences))
