"""
One place that turns exceptions into clear API errors: no input ever produces a 500.
"""

import logging

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from inbox.services import IdempotencyConflict

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER = 5


def database_unavailable_response() -> Response:
    response = Response(
        {"detail": "The database is unavailable; try again shortly."},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
    )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": "The request body is too large."}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, IdempotencyConflict):
        return Response(
            {"detail": "This Idempotency-Key was already used with a different request body."},
            status=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.warning("database unavailable: %s", exc)
        return database_unavailable_response()
    return drf_exception_handler(exc, context)
