"""
Error responses and the order of the security schemes in the OpenAPI schema, and the page that
shows it (``SwaggerUIView``).

drf-spectacular documents the success responses only. A client (and Schemathesis, which checks
that every response is one the schema documents) also needs the errors each operation can answer:
this post-processing hook adds them, with the two shapes inbox.api.errors produces: ``{"detail":
"..."}`` and, for validation errors, ``{"<field>": ["...", ...]}`` (nested for list items).
https://drf-spectacular.readthedocs.io/en/latest/customization.html#step-7-postprocessing-hooks
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.views import SpectacularSwaggerSplitView

ERROR_DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
    "description": "What went wrong, in one sentence.",
}

# DRF validation errors: each field maps to its messages, or (list items, nested fields) to an
# object of the same shape; a body that cannot be parsed gives an ErrorDetail instead.
VALIDATION_ERRORS = {
    "type": "object",
    "additionalProperties": {
        "anyOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "object"},
            {"type": "string"},
        ]
    },
    "description": "Messages by field (``detail`` when the request could not be read at all).",
}

DESCRIPTIONS = {
    "400": "The request is invalid: messages by field.",
    "401": "Not authenticated, or bad credentials.",
    "403": "Authenticated, but not allowed (the permission, or the API key's scope, is missing).",
    "404": "No notification of yours has this id (on the list: the cursor is invalid).",
    "413": "The request body is too large.",
    "415": "The body is not JSON.",
    "422": "This Idempotency-Key was used with a different body.",
    "429": "Too many requests; wait for Retry-After seconds.",
    "503": "The database is unavailable; retry after Retry-After seconds.",
}

RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}


def _codes(path: str, method: str) -> set[str]:
    codes = {"401", "429", "503"}
    if method in ("post", "put", "patch"):
        codes |= {"400", "413", "415"}
    if method == "get" and path.rstrip("/").endswith("/notifications"):
        codes |= {"400", "404"}  # bad filters or page size; DRF answers an invalid cursor with 404
    if "{" in path:
        codes.add("404")
    if path.rstrip("/").endswith("/notifications") and method == "post":
        codes |= {"403", "422"}
    return codes


def add_error_responses(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorDetail", ERROR_DETAIL)
    schemas.setdefault("ValidationErrors", VALIDATION_ERRORS)
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/") or path.startswith("/api/schema"):
            continue
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for code in sorted(_codes(path, method)):
                ref = "ValidationErrors" if code == "400" else "ErrorDetail"
                response = {
                    "description": DESCRIPTIONS[code],
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
                }
                if code in ("429", "503"):
                    response["headers"] = RETRY_AFTER
                operation["responses"].setdefault(code, response)
    order_security_schemes(result)
    return result


def _security_rank(scheme: dict) -> int:
    """Bearer tokens first (what clients use), then API keys in a header, then the session cookie."""
    if scheme.get("type") == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
        return 0
    if scheme.get("type") == "apiKey" and scheme.get("in") == "header":
        return 1
    if scheme.get("type") == "apiKey" and scheme.get("in") == "cookie":
        return 3
    return 2


def order_security_schemes(result) -> None:
    """
    List the security schemes in the order a reader should try them: drf-spectacular sorts them by
    name, so Swagger UI's *Authorize* dialog offered the admin's session cookie (``cookieAuth``)
    before the bearer token (``jwtAuth``). Each operation's ``security`` follows the same order.
    """
    schemes = result.get("components", {}).get("securitySchemes")
    if not schemes:
        return
    ranked = sorted(schemes, key=lambda name: (_security_rank(schemes[name]), name))
    result["components"]["securitySchemes"] = {name: schemes[name] for name in ranked}
    position = {name: i for i, name in enumerate(ranked)}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and isinstance(operation.get("security"), list):
                operation["security"].sort(key=lambda req: min((position.get(n, len(position)) for n in req), default=len(position)))


# --- The docs page ------------------------------------------------------------------------------


class SwaggerUIView(SpectacularSwaggerSplitView):
    """
    Swagger UI under the site's Content-Security-Policy, with no 'unsafe-inline': the split view
    serves its start-up script as a file of its own (``?script``), the bundle comes from
    drf-spectacular-sidecar's static files, and the template's one inline ``<style>`` carries the
    request's CSP nonce (inbox/templates/inbox/swagger_ui.html).
    """

    template_name = "inbox/swagger_ui.html"

    def options(self, request, *args, **kwargs):
        # DRF's metadata answer renders through the page's TemplateHTMLRenderer, which has no
        # template for it: a 500. What a page answers instead: the methods it allows.
        response = HttpResponse(status=200)
        response["Allow"] = "GET, HEAD, OPTIONS"
        response["Content-Length"] = "0"
        return response
