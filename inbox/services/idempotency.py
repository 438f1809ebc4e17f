"""
Idempotency keys: a send retried with the same key replays the first response (Stripe's rule).
"""

from dataclasses import dataclass

from django.db import IntegrityError, transaction

from ..exceptions import IdempotencyConflict
from ..models import IdempotencyKey


@dataclass
class IdempotencyClaim:
    record: IdempotencyKey
    replay: bool


def idempotency_key_claim(*, sender, key: str, request_hash: str) -> IdempotencyClaim:
    """
    Claim ``key`` for ``sender`` inside the caller's transaction. A concurrent claim of the same
    key waits on the unique constraint until the first commits, then replays its response.
    """
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(sender=sender, key=key, request_hash=request_hash)
        return IdempotencyClaim(record=record, replay=False)
    except IntegrityError:
        record = IdempotencyKey.objects.get(sender=sender, key=key)
        if record.request_hash != request_hash:
            raise IdempotencyConflict(key) from None
        return IdempotencyClaim(record=record, replay=True)


def idempotency_key_complete(*, record: IdempotencyKey, status: int, body: dict) -> None:
    record.response_status = status
    record.response_body = body
    record.save(update_fields=["response_status", "response_body"])
