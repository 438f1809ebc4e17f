"""python manage.py notify <username> "title" [--message ...] [--category ...] [--data JSON] [--link URL] [--sender NAME]"""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from inbox.api.serializers import NotificationSendSerializer
from inbox.services import UnknownRecipients, notification_create


class Command(BaseCommand):
    help = "Send a notification to one or more users from the shell (stored, then pushed to their open clients)."

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
        try:
            created = notification_create(sender=sender, **serializer.notification_fields())
        except UnknownRecipients as exc:
            raise CommandError(f"Unknown or inactive recipient(s): {exc}") from None
        for n in created:
            self.stdout.write(f"sent #{n.id} to {n.recipient_id}: {n.title}")
