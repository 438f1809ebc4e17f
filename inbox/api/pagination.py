from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

MAX_ID = 2**63 - 1


class NotificationCursorPagination(CursorPagination):
    """Newest first; oldest first when catching up with ``after=``. The cursor is an id, so every page is an index range scan."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request):
        # DRF puts the cursor's position into the id filter unchecked: a forged "p=abc" would
        # raise ValueError (a 500). A position is an id.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            p = cursor.position
            if not (p.isascii() and p.isdigit()) or int(p) > MAX_ID:
                raise NotFound(self.invalid_cursor_message)
        return cursor

    def get_ordering(self, request, queryset, view):
        return ("id",) if request.query_params.get("after") not in (None, "") else ("-id",)


def id_param(request, name):
    """A query parameter that is an id or a position (0 to 2**63 - 1), None when absent; else a 400 naming it."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_ID:
        raise ValidationError({name: [f"Must be an integer between 0 and {MAX_ID}."]})
    return int(raw)
