import orjson
from inbox.conf import inbox_setting
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser


def _max_depth() -> int:
    # 'data' may nest INBOX['MAX_DATA_DEPTH'] levels (a field error from the serializer); a few more
    # levels for the envelope. Deeper bodies stop here: DRF's fields call str() and json.dumps() on
    # their input, which raise RecursionError (a 500) near 1,000 levels, and orjson.dumps (the
    # Idempotency-Key hash) refuses more than 254.
    return inbox_setting("MAX_DATA_DEPTH") + 8


def _too_deep(value, limit: int) -> bool:
    """Whether containers in ``value`` nest deeper than ``limit`` levels (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


class StrictJSONParser(JSONParser):
    """
    JSON via orjson: fast, strict UTF-8, and bounded nesting (orjson refuses documents nested
    deeper than 1,024 levels instead of overflowing the stack; this parser refuses more than
    ``INBOX['MAX_DATA_DEPTH'] + 8``), so no body can turn into a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        if not raw:
            raise ParseError("The request body is empty; send a JSON object.")
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None
        limit = _max_depth()
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, (dict, list)) and _too_deep(item, limit - 1):
                    raise ValidationError({key: [f"Nested deeper than {limit} levels."]})
        elif isinstance(value, list) and _too_deep(value, limit):
            raise ParseError(f"The JSON document is nested deeper than {limit} levels.")
        return value
