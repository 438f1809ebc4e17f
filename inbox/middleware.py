"""
HTTP guards that apply before any view runs.
"""

import logging

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

from .conf import inbox_setting

logger = logging.getLogger(__name__)

FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
NUL_MESSAGE = "Must not contain a NUL character."


class RequestParametersMiddleware:
    """
    400 for parameters no route can use, before any view or middleware reads them:

    - more than ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` in the query string or a form body (Django raises
      ``TooManyFieldsSent`` wherever ``request.GET`` is first read; with DEBUG on, its error page read
      it again and answered 500);
    - a NUL (``%00``) anywhere in the query string: PostgreSQL refuses NUL in text, so a filter or a
      search that passed one on (the admin's ``?category=%00``, ``?q=%00``) was a 500.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = request.META.get("QUERY_STRING", "")
        if query:
            try:
                params = request.GET  # parsed once here; cached on the request
            except TooManyFieldsSent:
                return _too_many_fields()
            if "%00" in query or "\x00" in query:
                # Messages by parameter, the API's shape of a 400 (inbox/api/schema.py).
                bad = {key: [NUL_MESSAGE] for key, values in params.lists() if "\x00" in key or any("\x00" in v for v in values)}
                if bad:
                    return JsonResponse(bad, status=400)
        if request.method == "POST" and request.content_type in FORM_CONTENT_TYPES:
            try:
                request.POST  # noqa: B018 (what CsrfViewMiddleware and the admin read next)
            except (TooManyFieldsSent, TooManyFilesSent):
                return _too_many_fields()
            except RequestDataTooBig:
                return JsonResponse({"detail": "The request body is too large."}, status=413)
        return self.get_response(request)


def _too_many_fields():
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    return JsonResponse({"detail": f"Too many parameters (the limit is {limit})."}, status=400)


_PER_VIEW = ("_csp_config", "_csp_update", "_csp_replace", "_csp_exempt", "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro", "_csp_exempt_ro")


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """
    django-csp's middleware, with the site's policy built once instead of on every response.

    django-csp builds both headers from the settings for each response (copying the policy dicts
    twice): 0.2 ms per request, on every API call. A response with nothing of its own (no nonce,
    no per-view decorator) gets the header built once per settings object; anything else, and
    DEBUG's 404 and 500 pages, goes through django-csp's own code.
    """

    _built: tuple | None = None

    def process_response(self, request, response):
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        report_only = getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
        if (
            getattr(request, "_csp_nonce", None) is not None
            or any(hasattr(response, name) for name in _PER_VIEW)
            or (settings.DEBUG and response.status_code in (404, 500))
            or (policy or {}).get("EXCLUDE_URL_PREFIXES")
            or (report_only or {}).get("EXCLUDE_URL_PREFIXES")
        ):
            return super().process_response(request, response)
        built = self._built
        if built is None or built[0] is not policy or built[1] is not report_only:
            built = self._built = (policy, report_only, build_policy(), build_policy(report_only=True))
        if built[2] and HEADER not in response:
            response[HEADER] = built[2]
        if built[3] and HEADER_REPORT_ONLY not in response:
            response[HEADER_REPORT_ONLY] = built[3]
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # as django-csp: too late for a nonce
        return response


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
