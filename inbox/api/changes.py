"""
``GET /api/changes/?since=<seq>``: the user's change journal for a polling client (issue 21;
docs/feed.md, "The change journal"), the same changes a WebSocket resume replays, as JSON pages.

Each change: ``{"seq", "type": "notification.created" | "notification.updated", "notification"}``
(the row as it is now; created when its id is above ``since``, so the client cannot have had it)
or ``{"seq", "type": "notification.deleted", "id", "reason"}``. Follow ``next`` until it is null,
then keep ``seq`` and poll with it. 400 for a ``since`` that is not an integer or is beyond the
user's journal, 410 ``sync_reset`` for one older than the journal keeps (reload the list, then
resume from the ``seq`` it gives).
"""

from __future__ import annotations

from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from inbox import selectors
from inbox.payloads import notification_payload
from inbox.store import journal

from .throttles import ReadThrottle

MAX_SEQ = 2**63 - 1
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _integer(request, name: str, default: int | None, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise ValidationError({name: [f"Required: the journal step to resume after (0 for everything)."]}, code="required")
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationError({name: [f"Must be an integer between {low} and {high}."]}, code=f"invalid_{name}")
    return int(raw)


def change_json(change: journal.Change, since: int) -> dict:
    if change.notification is None:
        return {"seq": change.seq, "type": "notification.deleted", "id": change.id, "reason": change.reason}
    kind = "notification.created" if change.id > since else "notification.updated"
    return {"seq": change.seq, "type": kind, "notification": notification_payload(change.notification)}


@method_decorator(never_cache, name="dispatch")
class ChangesView(APIView):
    throttle_classes = [ReadThrottle]

    @extend_schema(
        parameters=[
            OpenApiParameter("since", OpenApiTypes.INT, required=True, description="The journal step to resume after (sync.done's seq)."),
            OpenApiParameter("after_id", OpenApiTypes.INT, description="Inside one step: only ids above (from `next`)."),
            OpenApiParameter("page_size", OpenApiTypes.INT, description=f"1 to {MAX_PAGE}; default {DEFAULT_PAGE}."),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad since"), 410: OpenApiResponse(description="sync_reset")},
        summary="Every change to my notifications after a journal step",
    )
    def get(self, request):
        since = _integer(request, "since", None, 0, MAX_SEQ)
        after_id = _integer(request, "after_id", None, 0, MAX_SEQ) if "after_id" in request.query_params else None
        size = _integer(request, "page_size", DEFAULT_PAGE, 1, MAX_PAGE)
        # The client's first ``since`` (a later page carries the same in ``origin``): created or updated.
        origin = _integer(request, "origin", since, 0, MAX_SEQ)
        position = journal.position(request.user.pk)
        unread = selectors.notification_unread_count(user_id=request.user.pk)
        if since > position.top:
            raise ValidationError({"since": [f"Beyond this user's change journal (at {position.top})."]}, code="invalid_since")
        if since < position.floor:
            body = {"code": "sync_reset", "detail": "Older than the journal keeps: reload the list, then resume from seq.",
                    "seq": position.top, "floor": position.floor, "unread": unread}
            return Response(body, status=410)
        page = journal.changes(request.user.pk, since=since, after_id=after_id, limit=size + 1)
        more = len(page) > size
        page = page[:size]
        nxt, seq = None, position.top
        if more:
            last = page[-1]
            seq = last.seq
            nxt = request.build_absolute_uri(
                f"{request.path}?since={last.seq}&after_id={last.id}&origin={origin}&page_size={size}"
            )
        elif page:
            seq = max(seq, page[-1].seq)
        return Response({"changes": [change_json(c, origin) for c in page], "seq": seq, "unread": unread, "next": nxt})
