"""
HTTP guards that apply before any view runs.
"""

import logging

from .conf import inbox_setting
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

logger = logging.getLogger(__name__)


class BodySizeLimitMiddleware:
    """Answer 413 to a body declared larger than INBOX_MAX_BODY_BYTES, without reading it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return JsonResponse({"detail": "Invalid Content-Length header."}, status=400)
        if length > inbox_setting("MAX_BODY_BYTES"):
            return JsonResponse(
                {"detail": f"The request body is too large (limit {inbox_setting('MAX_BODY_BYTES')} bytes)."}, status=413
            )
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """A lost database (restart, outage) is a 503 with Retry-After on every page, never a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError)):
            logger.warning("database unavailable: %s", exception)
            response = JsonResponse({"detail": "The database is unavailable; try again shortly."}, status=503)
            response["Retry-After"] = "5"
            return response
        return None
