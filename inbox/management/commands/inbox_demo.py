"""Create the demo users and service account (idempotent) and print their credentials."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import transaction

DEMO_USERS = [("alice", "alice-password"), ("bob", "bob-password")]
SERVICE = ("billing-service", "service-password")
ADMIN = ("admin", "admin-password")
SENDERS_GROUP = "notification senders"


def senders_group() -> Group:
    group, _ = Group.objects.get_or_create(name=SENDERS_GROUP)
    group.permissions.add(Permission.objects.get(codename="send_notification", content_type__app_label="inbox"))
    return group


class Command(BaseCommand):
    help = "Create demo users alice and bob, the service account billing-service and the operator admin."

    @transaction.atomic
    def handle(self, *args, **opts):
        User = get_user_model()
        for username, password in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.save()
        service, _ = User.objects.get_or_create(username=SERVICE[0])
        service.set_password(SERVICE[1])
        service.save()
        service.groups.add(senders_group())
        admin, _ = User.objects.get_or_create(username=ADMIN[0], defaults={"is_staff": True, "is_superuser": True})
        admin.is_staff = admin.is_superuser = True
        admin.set_password(ADMIN[1])
        admin.save()
        self.stdout.write("Demo accounts (username / password):")
        for username, password in DEMO_USERS:
            self.stdout.write(f"  user     {username:16} {password}")
        self.stdout.write(f"  service  {SERVICE[0]:16} {SERVICE[1]}   (may send through POST /api/notifications/)")
        self.stdout.write(f"  operator {ADMIN[0]:16} {ADMIN[1]}   (Django admin at /admin/)")
