"""
Credentials: every token a user holds stops working, and whatever those tokens opened is closed.

A password change, a deactivation and a deletion call this through inbox/signals.py (an adapter);
an operator or a host project may call it on demand ("sign out everywhere"). Tokens are not listed
anywhere: the user's TokenVersion goes up by one and a token carrying an older ``token_version``
claim (or none) is refused by the API, the refresh endpoint and the socket (inbox/directory.py).
``CredentialsRevoked`` is announced after commit; the WebSocket backend closes the user's open
sockets on every server process with it.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .. import delivery, directory
from ..events import CredentialsRevoked
from ..models import TokenVersion


def credentials_revoke(*, user_id: int, user_exists: bool = True) -> int | None:
    """
    Revoke every token issued to the user so far and close their open sockets. Returns the new
    token version (None for a user being deleted: their row goes with them, and so do their tokens).
    """
    version = None
    with transaction.atomic():
        if user_exists:
            TokenVersion.objects.get_or_create(user_id=user_id)
            TokenVersion.objects.filter(user_id=user_id).update(version=F("version") + 1, revoked_at=timezone.now())
            version = TokenVersion.objects.values_list("version", flat=True).get(user_id=user_id)
        transaction.on_commit(lambda: directory.users.discard(user_id))
        delivery.publish_on_commit(CredentialsRevoked(user_id=user_id))
    directory.users.discard(user_id)
    return version

