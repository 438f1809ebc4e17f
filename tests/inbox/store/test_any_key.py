"""
The store's path for user models keyed by a UUID or a string (a host's AUTH_USER_MODEL), and the
names such keys get: lock buckets and channel-layer groups. The whole path against a real UUID user
table is tests/host/test_host_project.py; here the PostgreSQL ORM path runs on this suite's users.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection, transaction
from django.utils import timezone

from inbox.models import Notification
from inbox.store import InactiveRecipients, NewSend, postgres
from realtime.publisher import group_for_user

GROUP_NAME = re.compile(r"^[a-zA-Z\d\-_.]{1,99}$")  # what channels accepts


def test_a_uuid_key_and_its_text_share_one_lock_bucket_the_same_in_every_process():
    key = uuid.UUID("78293958-6834-4b66-89c6-8df40ccbe0d7")
    assert postgres.key_lock_buckets([key]) == postgres.key_lock_buckets([str(key)]) == [1629485123 % 1024]  # zlib.crc32 of its text


def test_lock_buckets_of_string_keys_are_ascending_distinct_and_in_range():
    buckets = postgres.key_lock_buckets([f"user-{i}" for i in range(5000)])
    assert buckets == sorted(set(buckets)) and 0 <= buckets[0] and buckets[-1] < postgres.LOCK_BUCKETS


def test_integer_users_keep_their_group_name():
    assert group_for_user(42) == "inbox.user.42"
    assert group_for_user("42") == "inbox.user.42"


def test_a_uuid_user_has_one_group_whether_named_by_the_uuid_or_its_text():
    key = uuid.uuid4()
    assert group_for_user(key) == group_for_user(str(key)) == f"inbox.user.{key.hex}"


@pytest.mark.parametrize("key", ["alice@example.com", "ümlaut", "x" * 500, "a b/c", "042", "s" + "0" * 40, "\udcff"])
def test_any_string_key_gets_a_valid_group_name_of_its_own(key):
    name = group_for_user(key)
    assert GROUP_NAME.match(name)
    assert name != group_for_user(42) and name != group_for_user(key + "x")


def test_042_and_42_are_two_string_keys_not_one():
    assert group_for_user("042") != group_for_user("42")


postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL ORM path; SQLite always writes through the ORM")


def _send(recipient_ids) -> NewSend:
    return NewSend(
        recipient_ids=recipient_ids, sender_id=None, category="general", title="t", message="", data={}, link="",
        created_at=timezone.now(), expires_at=None,
    )


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_orm_path_on_postgresql_writes_in_order_and_counts_unread(alice, bob):
    announced = []
    ids, unread = postgres.insert_any_key(_send([alice.pk, bob.pk, alice.pk]), announce=lambda s, i, u: announced.append((i, u)))
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert list(Notification.objects.filter(id__in=ids).order_by("id").values_list("recipient_id", flat=True)) == [alice.pk, bob.pk, alice.pk]
    assert unread == {alice.pk: 2, bob.pk: 1}
    assert announced == [(ids, unread)]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_orm_path_on_postgresql_refuses_an_inactive_recipient_with_nothing_stored(alice, make_user):
    gone = make_user(is_active=False)
    with pytest.raises(InactiveRecipients) as refused:
        postgres.insert_any_key(_send([alice.pk, gone.pk]), announce=lambda *a: None)
    assert refused.value.ids == {gone.pk}
    assert not Notification.objects.exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_orm_path_on_postgresql_holds_the_recipients_locks_until_the_callers_commit(alice):
    bucket = postgres.key_lock_buckets([alice.pk])[0]
    with transaction.atomic():
        postgres.insert_any_key(_send([alice.pk]), announce=lambda *a: None)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND classid = %s AND objid = %s",
                [postgres.LOCK_NAMESPACE, bucket],
            )
            assert cursor.fetchone()[0] == 1
