"""
Create the demo users and service account (idempotent) and print their credentials: in demo mode only.

Demo mode is ``INBOX_DEMO=1``, or, when INBOX_DEMO is not set, DJANGO_DEBUG on (the default of a
fresh clone, so ``make run`` is a working demo). With DEBUG off and no INBOX_DEMO the command refuses:
``admin``/``admin-password`` must never appear on a production database because someone ran
``make run`` there. ``--if-demo`` (what ``make run`` passes) skips quietly instead, with the
production bootstrap commands and a warning when demo accounts still have their demo passwords.
"""

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

DEMO_USERS = [("alice", "alice-password"), ("bob", "bob-password")]
SERVICE = ("billing-service", "service-password")
ADMIN = ("admin", "admin-password")
SENDERS_GROUP = "notification senders"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

BOOTSTRAP = """Production bootstrap:
  python manage.py createsuperuser                               # the first operator (Django admin at /admin/)
  python manage.py inbox_apikey create <name> --scopes send      # the first service key (printed once)"""


def demo_mode() -> bool:
    """INBOX_DEMO when it is set (1/0, true/false, yes/no, on/off), else settings.DEBUG."""
    raw = os.environ.get("INBOX_DEMO")
    if raw is None:
        return bool(settings.DEBUG)
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise CommandError(f"INBOX_DEMO={raw!r}: use 1 (demo accounts) or 0 (none).")


def accounts_with_demo_passwords() -> list[str]:
    """The demo accounts on this database that a demo password still opens."""
    User = get_user_model()
    known = dict([*DEMO_USERS, SERVICE, ADMIN])
    users = User.objects.filter(username__in=known, is_active=True).values_list("username", "password")
    # hashers.check_password, not User.check_password: a check must not upgrade and save a hash.
    return sorted(name for name, encoded in users if check_password(known[name], encoded))


def demo_user(username: str, password: str, **flags):
    """
    The demo user with this password, created with it, or given it only when it has another one: a
    password change revokes the user's tokens (inbox.services.credentials), and ``make run`` runs
    this command at every start.
    """
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is None:
        return User.objects.create_user(username=username, password=password, **flags)
    changed = [name for name, value in flags.items() if getattr(user, name) != value]
    for name in changed:
        setattr(user, name, flags[name])
    if not user.check_password(password):
        user.set_password(password)
        changed.append("password")
    if changed:
        user.save()
    return user


def senders_group() -> Group:
    group, _ = Group.objects.get_or_create(name=SENDERS_GROUP)
    group.permissions.add(Permission.objects.get(codename="send_notification", content_type__app_label="inbox"))
    return group


class Command(BaseCommand):
    help = (
        "Demo mode only (INBOX_DEMO=1, or DJANGO_DEBUG on without INBOX_DEMO): create demo users alice and bob, "
        "the service account billing-service and the operator admin, with known passwords."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-demo", action="store_true",
            help="Outside demo mode, create nothing and exit 0 (make run) instead of refusing.",
        )

    def handle(self, *args, **opts):
        if not demo_mode():
            self.not_demo_mode(skip=opts["if_demo"])
            return
        self.create()

    def not_demo_mode(self, *, skip: bool) -> None:
        raw = os.environ.get("INBOX_DEMO")
        why = "DJANGO_DEBUG is off and INBOX_DEMO is not set" if raw is None else f"INBOX_DEMO={raw}"
        if not skip:
            raise CommandError(
                f"Not in demo mode ({why}): no demo account with a known password is created. "
                f"Set INBOX_DEMO=1 to create them anyway (never on a production database).\n{BOOTSTRAP}"
            )
        self.stdout.write(f"Demo mode is off ({why}): no demo accounts.\n{BOOTSTRAP}")
        left = accounts_with_demo_passwords()
        if left:
            self.stderr.write(
                self.style.WARNING(
                    f"WARNING: demo accounts still open with their demo passwords on this database: {', '.join(left)}. "
                    "Change their passwords or deactivate them in the admin before serving real users."
                )
            )

    @transaction.atomic
    def create(self) -> None:
        for username, password in DEMO_USERS:
            demo_user(username, password)
        service = demo_user(*SERVICE)
        service.groups.add(senders_group())
        demo_user(*ADMIN, is_staff=True, is_superuser=True)
        self.stdout.write("Demo accounts (username / password):")
        for username, password in DEMO_USERS:
            self.stdout.write(f"  user     {username:16} {password}")
        self.stdout.write(f"  service  {SERVICE[0]:16} {SERVICE[1]}   (may send through POST /api/notifications/)")
        self.stdout.write(f"  operator {ADMIN[0]:16} {ADMIN[1]}   (Django admin at /admin/)")
