"""
Error responses in the OpenAPI schema.

drf-spectacular documents the success responses only. A client (and Schemathesis, which checks
that every response is one the schema documents) also needs the errors each operation can answer:
this post-processing hook adds them, with the two shapes inbox.api.errors produces: ``{"detail":
"..."}`` and, for validation errors, ``{"<field>": ["...", ...]}`` (nested for list items).
https://drf-spectacular.readthedocs.io/en/latest/customization.html#step-7-postprocessing-hooks
"""

from __future__ import annotations

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
    "403": "Authenticated, but not allowed (the send permission is missing).",
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
    return result
