"""
API keys of services, from the shell: ``create``, ``list``, ``revoke``.

``create <name>`` prints the new key once, alone on the last line of stdout, so that a script can
take it with ``| tail -n 1``; only its hash is stored. Without ``--user`` the key acts as a service
account named ``<name>`` (created if needed, with an unusable password: it never signs in).
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from inbox.models import ServiceKey

VALID_SCOPES = [choice.value for choice in ServiceKey.Scope]
NAME_MAX_LENGTH = ServiceKey._meta.get_field("name").max_length


def parse_scopes(raw: str) -> list[str]:
    scopes = sorted({s.strip() for s in raw.split(",") if s.strip()})
    unknown = [s for s in scopes if s not in VALID_SCOPES]
    if unknown or not scopes:
        shown = ", ".join(repr(s) for s in unknown) if unknown else "none"
        raise CommandError(f"Unknown scope(s): {shown}. Valid scopes: {', '.join(VALID_SCOPES)} (comma-separated).")
    return scopes


class Command(BaseCommand):
    help = "Create, list and revoke the API keys of services (Authorization: Api-Key <key>)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")
        create = sub.add_parser("create", help="Create a key; it is printed once, alone on the last line.")
        create.add_argument("name", help=f"The key's name (at most {NAME_MAX_LENGTH} characters); also the service account's without --user.")
        create.add_argument("--scopes", default="send", help=f"Comma-separated, of {', '.join(VALID_SCOPES)} (default: send).")
        create.add_argument("--user", help="The existing account the key acts as (default: a service account named <name>).")
        create.add_argument("--expires", type=int, metavar="DAYS", help="Expire the key after this many days (default: never).")
        sub.add_parser("list", help="List the keys: prefix, name, service, scopes, created, last used, revoked.")
        revoke = sub.add_parser("revoke", help="Revoke the key with this prefix (cannot be undone).")
        revoke.add_argument("prefix", help="The key's prefix: the part before the dot.")

    def handle(self, *args, action, **opts):
        return getattr(self, f"handle_{action}")(**opts)

    @transaction.atomic
    def handle_create(self, *, name, scopes, user=None, expires=None, **opts):
        name = name.strip()
        if not name or len(name) > NAME_MAX_LENGTH:
            raise CommandError(f"A key's name is 1 to {NAME_MAX_LENGTH} characters.")
        scope_list = parse_scopes(scopes)
        if expires is not None and not 1 <= expires <= 36_500:
            raise CommandError("--expires is a number of days from 1 to 36500.")
        service = self._service(name, user)
        expiry = timezone.now() + timedelta(days=expires) if expires is not None else None
        key, raw = ServiceKey.objects.create_key(name=name, service=service, scopes=scope_list, expiry_date=expiry)
        self.stdout.write(
            f"Created API key {key.prefix} '{name}' acting as {service.get_username()!r}, scopes {','.join(scope_list)}"
            + (f", expires {expiry:%Y-%m-%d %H:%M} UTC" if expiry else "")
            + ". It is shown once; send it as 'Authorization: Api-Key <key>':"
        )
        self.stdout.write(raw)

    def _service(self, name: str, username: str | None):
        User = get_user_model()
        if username is not None:
            found = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
            if found is None:
                raise CommandError(f"No account named {username!r} (--user names an existing account).")
            if not found.is_active:
                raise CommandError(f"The account {username!r} is inactive: its keys would be refused.")
            return found
        found = User._default_manager.filter(**{User.USERNAME_FIELD: name}).first()
        if found is None:
            found = User(**{User.USERNAME_FIELD: name})
            found.set_unusable_password()
            found.save()
            return found
        if found.has_usable_password():
            raise CommandError(
                f"{name!r} is an existing account with a password. To make a key act as it, name it explicitly: "
                f"--user {name}; or pick another key name for a new service account."
            )
        if not found.is_active:
            raise CommandError(f"The service account {name!r} is inactive: its keys would be refused.")
        return found

    def handle_list(self, **opts):
        keys = list(ServiceKey.objects.select_related("service").order_by("created"))
        if not keys:
            self.stdout.write("No API keys.")
            return
        header = ("prefix", "name", "service", "scopes", "created", "last used", "revoked")
        rows = [
            (
                k.prefix, k.name, k.service.get_username(), ",".join(k.scopes) or "-",
                f"{k.created:%Y-%m-%d %H:%M}", f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
                "yes" if k.revoked else ("expired" if k.has_expired else "no"),
            )
            for k in keys
        ]
        widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            self.stdout.write("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())

    def handle_revoke(self, *, prefix, **opts):
        key = ServiceKey.objects.filter(prefix=prefix.strip()).first() if "\x00" not in prefix else None
        if key is None:
            raise CommandError(f"No API key has the prefix {prefix!r} (see: inbox_apikey list).")
        if key.revoked:
            self.stdout.write(f"API key {key.prefix} '{key.name}' was already revoked.")
            return
        key.revoked = True
        key.save(update_fields=["revoked"])
        self.stdout.write(f"Revoked API key {key.prefix} '{key.name}'. Servers refuse it within a few seconds.")
