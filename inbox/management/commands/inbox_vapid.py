"""
``python manage.py inbox_vapid``: a new VAPID key pair for Web Push, printed as the environment
lines the settings read (notifications_site/settings/fallback.py). Keep the private key secret and
stable: a new one invalidates every browser's subscription (they subscribed with the public key).
"""

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management.base import BaseCommand

from inbox.fallback.push import b64url


class Command(BaseCommand):
    help = "Generate a VAPID key pair for Web Push and print it as environment variables."

    def handle(self, *args, **options) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        private = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
        public = b64url(key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
        self.stdout.write(f"INBOX_VAPID_PRIVATE_KEY={private}")
        self.stdout.write("INBOX_VAPID_SUBJECT=mailto:ops@example.com")
        self.stdout.write(f"# public key (GET /api/push-subscriptions/ gives it to pages): {public}")
