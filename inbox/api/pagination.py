from rest_framework.exceptions import NotFound
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
