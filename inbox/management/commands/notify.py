"""
python manage.py notify <username> "title" [--message ...] [--category ...] [--data JSON] [--link URL] [--sender NAME]

The notification is stored by the same service as the REST send. Whether it is also pushed live
depends on the channel layer this process shares with the server: the command says which, in
plain words (under ``make run`` there is no Redis, so it is stored but not pushed).
"""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from inbox import delivery
from inbox.api.serializers import NotificationSendSerializer
from inbox.services import UnknownRecipients, notification_create


class Command(BaseCommand):
    help = (
        "Send a notification to one or more users from the shell: stored, then pushed to their open pages "
        "when this process shares a channel layer with the server (REDIS_URL)."
    )

    def add_arguments(self, parser):
        parser.add_argument("usernames", help="Recipient username, or several separated by commas.")
        parser.add_argument("title")
        parser.add_argument("--message", default="")
        parser.add_argument("--category", default="general")
        parser.add_argument("--data", default="{}", help="A JSON object.")
        parser.add_argument("--link", default="")
        parser.add_argument("--sender", default=None, help="Username recorded as the sender.")

    def handle(self, *args, **opts):
        try:
            data = json.loads(opts["data"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--data is not valid JSON: {exc}") from None
        names = [n.strip() for n in opts["usernames"].split(",") if n.strip()]
        serializer = NotificationSendSerializer(
            data={
                "recipients": names,
                "title": opts["title"],
                "message": opts["message"],
                "category": opts["category"],
                "data": data,
                "link": opts["link"],
            }
        )
        if not serializer.is_valid():
            raise CommandError("; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in serializer.errors.items()))
        sender = None
        if opts["sender"]:
            sender = get_user_model().objects.filter(username=opts["sender"]).first()
            if sender is None:
                raise CommandError(f"Unknown sender {opts['sender']!r}")
        fields = serializer.notification_fields()
        try:
            created = notification_create(sender=sender, **fields)
        except UnknownRecipients as exc:
            raise CommandError(f"Unknown or inactive recipient(s): {exc}") from None
        shown = {u.pk: getattr(u, "username", u.pk) for u in fields["recipients"]}
        for n in created:
            self.stdout.write(f"stored #{n.id} for {shown.get(n.recipient_id, n.recipient_id)}: {n.title}")
        self.stdout.write(delivery_note())


def delivery_note() -> str:
    """What happens next to what was stored, as each delivery backend says it (``reach()``)."""
    backends = delivery.backends()
    if not backends:
        return "Not pushed: INBOX['DELIVERY_BACKENDS'] is empty. Open pages show it when they are reloaded."
    notes = [note for backend in backends if (note := backend.reach())]
    return "\n".join(notes) or "Pushed to the recipients' open pages."
