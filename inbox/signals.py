"""
Signal adapters: connected in InboxConfig.ready(), a few lines each, no domain logic.

Rows saved one by one (the admin's add form, the shell, other code) are pushed after commit.
The bulk send path (services.notification_create) does not go through save() and pushes itself.
"""

from django.db.models.signals import m2m_changed, post_delete, post_save


def _notification_saved(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        from .services import notification_push_saved

        notification_push_saved(notification=instance)


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from . import directory
    from .models import Notification

    post_save.connect(_notification_saved, sender=Notification, dispatch_uid="inbox.notification_saved")
    # Who may do what changed: forget this process' remembered answers (inbox/directory.py).
    User = get_user_model()
    for signal, sender in (
        (post_save, User), (post_delete, User), (post_save, Group), (post_delete, Group),
        (m2m_changed, User.user_permissions.through), (m2m_changed, User.groups.through),
        (m2m_changed, Group.permissions.through),
    ):
        signal.connect(directory.forget_all, sender=sender, dispatch_uid="inbox.directory")  # unique per (signal, sender)
