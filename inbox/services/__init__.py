"""
Writes, a module per sub-domain (HackSoft's "Services > Modules"; Zulip's ``zerver/actions``). Each
service runs in a transaction, decides what a write means, and announces what happened through the
delivery port after commit (inbox.delivery): a rolled-back write is never announced, and a carrier's
outage never fails a write.
"""

from ..exceptions import IdempotencyConflict, UnknownRecipients
from .credentials import credentials_revoke
from .deleting import notification_admin_delete, notification_delete
from .idempotency import IdempotencyClaim, idempotency_key_claim, idempotency_key_complete
from .read_state import (
    notification_ack,
    notification_admin_set_read,
    notification_mark_all_read,
    notification_mark_read,
    notification_mark_unread,
)
from .recipients import (
    ExternalRef,
    ExternalUser,
    InvalidExternalId,
    InvalidRecipientProfile,
    external_id_check,
    recipient_ensure,
    recipient_erase,
    recipient_get,
    recipient_provision,
    recipients_ensure,
    recipients_forget,
    recipients_known,
)
from .sending import notification_create, notification_push_saved, notification_push_updated, notification_resend

__all__ = [
    "IdempotencyClaim",
    "IdempotencyConflict",
    "UnknownRecipients",
    "ExternalRef",
    "ExternalUser",
    "InvalidExternalId",
    "InvalidRecipientProfile",
    "credentials_revoke",
    "idempotency_key_claim",
    "idempotency_key_complete",
    "notification_ack",
    "notification_admin_delete",
    "notification_admin_set_read",
    "notification_create",
    "notification_delete",
    "notification_mark_all_read",
    "notification_mark_read",
    "notification_mark_unread",
    "notification_push_saved",
    "notification_push_updated",
    "notification_resend",
    "recipient_ensure",
    "recipient_erase",
    "recipient_get",
    "recipient_provision",
    "external_id_check",
    "recipients_ensure",
    "recipients_forget",
    "recipients_known",
]
