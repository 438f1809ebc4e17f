"""
The fallbacks' two links that carry their own proof, a signature, instead of a session or a token.

``unsubscribe``: the e-mail's one-click unsubscribe (RFC 8058). ``GET`` shows what the link does and a button
(mail scanners follow links; they must not unsubscribe anyone); ``POST`` (the button, or the mail
client's one-click request, ``List-Unsubscribe=One-Click``) turns e-mail off for the link's
categories for that person. The link is signed (django.core.signing): a bad one is a 400.

``push_ack``: the service worker showed a Web Push (``{"ack": "<token from the push>"}``): the
notification is acked (``delivered_at``), as a socket's ack would. A bad or stale token is a 400.
"""

from __future__ import annotations

from django.core import signing
import orjson
from django.contrib.auth import get_user_model
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from ..models import Channel
from ..services.preferences import category_channel_turn_off
from ..services.read_state import notification_ack
from .mail import read_unsubscribe_token
from .push import read_ack_token


@csrf_exempt  # the mail client's one-click POST carries no CSRF token; the signed link is the proof
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    try:
        user_id, categories = read_unsubscribe_token(token)
    except signing.BadSignature:
        return HttpResponse("This unsubscribe link is not valid.", status=400, content_type="text/plain; charset=utf-8")
    context = {"categories": categories, "done": False}
    if request.method == "POST":
        context["done"] = True
        context["kept"] = [
            c for c in categories if not category_channel_turn_off(user_id=user_id, category=c, channel=Channel.EMAIL)
        ]
    return render(request, "inbox/email/unsubscribe.html", context)


@csrf_exempt  # a service worker has no session or CSRF token; the signed token is the proof
@require_http_methods(["POST"])
def push_ack(request):
    try:
        body = orjson.loads(request.body[:2048]) if request.body else None
        user_id, notification_id = read_ack_token(body.get("ack") if isinstance(body, dict) else None)
    except (orjson.JSONDecodeError, signing.BadSignature):
        return JsonResponse({"ack": ["Must be the ack token of a push."]}, status=400)
    user = get_user_model()(pk=user_id)
    return JsonResponse({"acked": notification_ack(user=user, ids=[notification_id])})
