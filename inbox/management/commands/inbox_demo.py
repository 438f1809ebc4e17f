"""Create the demo users and service account (idempotent) and print their credentials."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import transaction

DEMO_USERS = [("alice", "alice-password"), ("bob", "bob-password")]
SERVICE = ("billing-service", "service-password")
ADMIN = ("admin", "admin-password")
SENDERS_GROUP = "notification senders"


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
    help = "Create demo users alice and bob, the service account billing-service and the operator admin."

    @transaction.atomic
    def handle(self, *args, **opts):
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
