"""
Signal adapters: connected in InboxConfig.ready(), a few lines each, no domain logic.

Rows saved one by one (the admin's add form, the shell, other code) are pushed after commit.
The bulk send path (services.notification_create) does not go through save() and pushes itself.
"""

from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

CREDENTIAL_FIELDS = frozenset({"password", "is_active"})


def _notification_saved(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        from .services import notification_push_saved

        notification_push_saved(notification=instance)


def _user_saving(sender, instance, raw=False, update_fields=None, **kwargs):
    """
    Before a user is saved: is this a password change or a deactivation? Then their tokens are
    revoked once the save is done. A password set with ``set_password()`` leaves Django's
    ``_password`` marker; one assigned by hand shows as a new hash in a full save. Django's own
    re-hash at sign-in (``check_password``'s upgrade: the same password, ``update_fields=["password"]``,
    the marker cleared) is not a change and revokes nothing.
    """
    instance._inbox_revoke = False
    if raw or instance.pk is None or (update_fields is not None and not CREDENTIAL_FIELDS & set(update_fields)):
        return
    before = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    password_set = getattr(instance, "_password", None) is not None
    password_replaced = update_fields is None and before["password"] != instance.password
    deactivated = before["is_active"] and not instance.is_active
    instance._inbox_revoke = password_set or password_replaced or deactivated


def _user_saved(sender, instance, created, raw=False, **kwargs):
    if instance.__dict__.pop("_inbox_revoke", False):
        from .services import credentials_revoke

        credentials_revoke(user_id=instance.pk)


def _user_deleting(sender, instance, origin=None, **kwargs):
    """
    Before Django's collector deletes a user's rows (inside its transaction): the users' journal
    locks, as every writer of their notifications takes them first. The collector deletes their
    notifications in chunks, and PostgreSQL's unread counter (store/sql/unread_counter.sql) is
    locked from the first chunk on: without the journal lock a send, a keyed update or the purge
    holding a later chunk's rows could deadlock with it. A queryset's delete holds all its users
    at once (buckets in order), from its first user's signal.
    """
    from django.db.models import QuerySet

    from .store import journal

    if isinstance(origin, QuerySet) and origin.model is sender:
        if getattr(origin, "_inbox_journal_held", False):
            return
        origin._inbox_journal_held = True
        journal.hold(list(origin.values_list("pk", flat=True)))
    else:
        journal.hold([instance.pk])


def _user_deleted(sender, instance, **kwargs):
    from .services import credentials_revoke

    credentials_revoke(user_id=instance.pk, user_exists=False)


def connect() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from . import directory
    from .models import Notification

    post_save.connect(_notification_saved, sender=Notification, dispatch_uid="inbox.notification_saved")
    # A password change, a deactivation, a deletion: the user's tokens and open sockets end.
    User = get_user_model()
    pre_save.connect(_user_saving, sender=User, dispatch_uid="inbox.credentials")
    post_save.connect(_user_saved, sender=User, dispatch_uid="inbox.credentials")
    post_delete.connect(_user_deleted, sender=User, dispatch_uid="inbox.credentials")
    pre_delete.connect(_user_deleting, sender=User, dispatch_uid="inbox.user_deleting")
    # Who may do what changed: forget this process' remembered answers (inbox/directory.py).
    for signal, sender in (
        (post_save, User), (post_delete, User), (post_save, Group), (post_delete, Group),
        (m2m_changed, User.user_permissions.through), (m2m_changed, User.groups.through),
        (m2m_changed, Group.permissions.through),
    ):
        signal.connect(directory.forget_all, sender=sender, dispatch_uid="inbox.directory")  # unique per (signal, sender)
