"""Sends that name recipients by the product's own ids: {"external_id": ..., "email"?, "name"?}."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inbox import directory, services
from inbox.models import ExternalRecipient, IdempotencyKey, Notification

User = get_user_model()


def send(client, **body):
    return client.post("/api/notifications/", {"title": "Your order shipped", **body}, format="json")


def test_an_unknown_external_id_is_created_on_the_fly_as_a_recipient_who_cannot_sign_in(sender_client):
    response = send(sender_client, recipient={"external_id": "cust-42", "email": "ada@example.com", "name": "Ada"})
    assert response.status_code == 201, response.content
    row = ExternalRecipient.objects.select_related("user").get(external_id="cust-42")
    assert (row.email, row.name) == ("ada@example.com", "Ada")
    assert not row.user.has_usable_password()
    assert row.user.is_active
    n = Notification.objects.get()
    assert n.recipient_id == row.user_id == response.json()["recipient"]


def test_uuids_emails_and_numbers_are_all_just_strings(sender_client):
    ids = ["0b6f9c2e-9a51-4a52-9b0e-6a1f3c6e2d10", "ada@example.com", "42", "a/b?c#d %2F"]
    response = send(sender_client, recipients=[{"external_id": e} for e in ids])
    assert response.status_code == 201, response.content
    assert sorted(ExternalRecipient.objects.values_list("external_id", flat=True)) == sorted(ids)
    assert Notification.objects.count() == 4


def test_a_known_external_id_gets_the_notification_and_later_sends_update_its_profile(sender_client):
    assert send(sender_client, recipient={"external_id": "cust-1", "email": "old@example.com", "name": "Old"}).status_code == 201
    first = ExternalRecipient.objects.get()
    assert send(sender_client, recipient={"external_id": "cust-1", "email": "new@example.com"}).status_code == 201
    row = ExternalRecipient.objects.get()
    assert (row.user_id, row.email, row.name) == (first.user_id, "new@example.com", "Old")  # name left as is
    assert row.updated_at > first.updated_at
    assert Notification.objects.filter(recipient_id=row.user_id).count() == 2
    assert User.objects.filter(username__startswith="ext:").count() == 1


def test_ids_usernames_and_external_ids_mix_in_one_send_in_order_and_once_each(sender_client, alice, bob):
    refs = ["alice", {"external_id": "cust-9"}, bob.pk, {"external_id": "cust-9", "name": "Nine"}, alice.pk]
    response = send(sender_client, recipients=refs)
    assert response.status_code == 201, response.content
    body = response.json()
    nine = ExternalRecipient.objects.get(external_id="cust-9")
    rows = dict(Notification.objects.values_list("id", "recipient_id"))
    assert [rows[i] for i in body["ids"]] == [alice.pk, nine.user_id, bob.pk]
    assert nine.name == "Nine"  # the later mention's profile wins


def test_a_long_external_id_gets_a_digest_account_name(sender_client):
    long_id = "x" * 255
    assert send(sender_client, recipient={"external_id": long_id}).status_code == 201
    row = ExternalRecipient.objects.select_related("user").get()
    assert row.external_id == long_id
    assert row.user.username.startswith("ext:sha256:")


@pytest.mark.parametrize(
    "recipient, field, message",
    [
        ({}, "external_id", "This field is required."),
        ({"external_id": 42}, "external_id", "An external id is a string of 1 to 255 characters without NUL."),
        ({"external_id": None}, "external_id", "An external id is a string of 1 to 255 characters without NUL."),
        ({"external_id": ""}, "external_id", "An external id is a string of 1 to 255 characters without NUL."),
        ({"external_id": "x" * 256}, "external_id", "An external id is a string of 1 to 255 characters without NUL."),
        ({"external_id": "a\x00b"}, "external_id", "An external id is a string of 1 to 255 characters without NUL."),
        ({"external_id": "ok", "role": "admin"}, "role", "Unknown field: a recipient object has external_id, email and name."),
        ({"external_id": "ok", "email": "not-an-address"}, "email", "Enter a valid email address."),
        ({"external_id": "ok", "email": 7}, "email", "An e-mail address is a string of at most 254 characters."),
        ({"external_id": "ok", "email": "a@" + "b" * 260 + ".com"}, "email", "An e-mail address is a string of at most 254 characters."),
        ({"external_id": "ok", "name": "n" * 256}, "name", "A name is a string of at most 255 characters without NUL."),
        ({"external_id": "ok", "name": "a\x00"}, "name", "A name is a string of at most 255 characters without NUL."),
        ({"external_id": "ok", "name": ["Ada"]}, "name", "A name is a string of at most 255 characters without NUL."),
    ],
    ids=[
        "missing", "number", "null", "empty", "too-long", "nul", "unknown-key", "bad-email", "email-not-string",
        "email-too-long", "name-too-long", "name-nul", "name-list",
    ],
)
def test_a_bad_recipient_object_is_a_400_naming_its_field_and_index_and_stores_nothing(sender_api, alice, recipient, field, message):
    single = send(sender_api, recipient=recipient)
    assert single.status_code == 400
    assert single.json() == {"recipient": {field: [message]}}
    many = send(sender_api, recipients=["alice", {"external_id": "fine"}, recipient])
    assert many.status_code == 400
    assert many.json() == {"recipients": {"2": {field: [message]}}}
    assert not Notification.objects.exists()
    assert not ExternalRecipient.objects.exists()
    assert not User.objects.filter(username__startswith="ext:").exists()


def test_null_email_and_name_leave_the_profile_as_it_is(sender_client):
    send(sender_client, recipient={"external_id": "c", "email": "c@example.com", "name": "C"})
    assert send(sender_client, recipient={"external_id": "c", "email": None, "name": None}).status_code == 201
    assert ExternalRecipient.objects.values_list("email", "name").get() == ("c@example.com", "C")


def test_a_send_refused_for_another_field_creates_no_recipient(sender_api):
    response = send(sender_api, recipients=[{"external_id": "new-1"}, {"external_id": "new-2"}], title="")
    assert response.status_code == 400
    assert "title" in response.json()
    response = send(sender_api, recipients=[{"external_id": "new-1"}, "nobody-by-that-name"])
    assert response.status_code == 400
    assert "nobody-by-that-name" in response.json()["recipients"][0]
    assert not ExternalRecipient.objects.exists()
    assert not User.objects.filter(username__startswith="ext:").exists()


@pytest.mark.django_db(transaction=True)
def test_a_send_refused_by_the_store_rolls_back_the_recipients_it_created(sender_api, alice):
    # alice is resolved (and remembered), then deactivated behind this process' back: the store refuses.
    assert send(sender_api, recipient="alice").status_code == 201
    User.objects.filter(pk=alice.pk).update(is_active=False)
    response = send(sender_api, recipients=["alice", {"external_id": "new-1"}])
    assert response.status_code == 400
    assert "'alice'" in response.json()["recipients"][0]
    assert not ExternalRecipient.objects.exists()
    assert not User.objects.filter(username__startswith="ext:").exists()
    assert directory.recipients.get(("external", "new-1")) is None  # nothing remembered of the rollback


@pytest.mark.django_db(transaction=True)
def test_a_recipient_erased_elsewhere_is_refused_once_then_created_anew(sender_api):
    assert send(sender_api, recipient={"external_id": "gone"}).status_code == 201
    assert directory.recipients.get(("external", "gone")) is not None  # remembered after the commit
    ExternalRecipient.objects.get().user.delete()
    directory.recipients.set(("external", "gone"), services.ExternalUser(10**9, "ext:gone", "", "", "gone"))  # another process' memory
    refused = send(sender_api, recipient={"external_id": "gone"})
    assert refused.status_code == 400
    assert refused.json() == {"recipient": ["Unknown or inactive recipient(s): 'gone'"]}
    assert send(sender_api, recipient={"external_id": "gone"}).status_code == 201
    assert ExternalRecipient.objects.filter(external_id="gone").count() == 1


def test_a_deactivated_external_recipient_is_refused(sender_api):
    send(sender_api, recipient={"external_id": "off"})
    row = ExternalRecipient.objects.select_related("user").get()
    row.user.is_active = False
    row.user.save()
    response = send(sender_api, recipient={"external_id": "off"})
    assert response.status_code == 400
    assert response.json() == {"recipient": ["Unknown or inactive recipient(s): 'off'"]}
    assert Notification.objects.count() == 1


def test_an_external_id_whose_account_name_a_local_account_holds_is_refused(sender_api, make_user):
    make_user("ext:mallory")  # a local account with a password that happens to carry the prefix
    response = send(sender_api, recipient={"external_id": "mallory"})
    assert response.status_code == 400
    assert response.json() == {"recipient": ["The account name of external id 'mallory' is taken by a local account."]}
    assert not ExternalRecipient.objects.exists()
    assert not Notification.objects.exists()


def test_the_idempotency_key_replays_a_send_by_external_id_without_new_recipients(sender_client):
    body = {"recipients": [{"external_id": "i-1"}, {"external_id": "i-2"}], "title": "Once"}
    first = sender_client.post("/api/notifications/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = sender_client.post("/api/notifications/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert (ExternalRecipient.objects.count(), Notification.objects.count(), IdempotencyKey.objects.count()) == (2, 2, 1)


def test_ten_thousand_new_external_ids_are_a_few_queries(sender_client):
    recipients = [{"external_id": f"bulk-{i}", "email": f"u{i}@example.com"} for i in range(10_000)]
    with CaptureQueriesContext(connection) as queries:
        response = send(sender_client, recipients=recipients)
    assert response.status_code == 201
    assert response.json()["count"] == 10_000
    assert ExternalRecipient.objects.count() == 10_000
    assert len(queries) < 80, len(queries)  # batches of hundreds, never one per recipient


def test_ten_thousand_known_external_ids_with_a_changed_profile_are_a_few_queries(sender_client):
    recipients = [{"external_id": f"bulk-{i}"} for i in range(10_000)]
    assert send(sender_client, recipients=recipients).status_code == 201
    renamed = [{"external_id": f"bulk-{i}", "name": f"User {i}"} for i in range(10_000)]
    with CaptureQueriesContext(connection) as queries:
        response = send(sender_client, recipients=renamed)
    assert response.status_code == 201
    assert ExternalRecipient.objects.filter(name="User 9999").exists()
    assert len(queries) < 80, len(queries)


@pytest.mark.django_db(transaction=True)
def test_a_send_to_remembered_external_recipients_asks_nothing_about_them(sender_client):
    recipients = [{"external_id": "warm-1", "name": "W"}, {"external_id": "warm-2"}]
    assert send(sender_client, recipients=recipients).status_code == 201
    with CaptureQueriesContext(connection) as queries:
        assert send(sender_client, recipients=recipients).status_code == 201
    assert not [q for q in queries if "externalrecipient" in q["sql"]]


def test_sends_by_ids_and_usernames_ask_no_more_than_before(sender_client, alice, bob):
    send(sender_client, recipients=["alice", bob.pk])
    with CaptureQueriesContext(connection) as queries:
        assert send(sender_client, recipients=["alice", bob.pk]).status_code == 201
    assert not [q for q in queries if "externalrecipient" in q["sql"] or "servicekey" in q["sql"]]


def test_the_schema_documents_the_object_form(client, db):
    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)
    request = schema["components"]["schemas"]["NotificationSendRequest"]["properties"]
    forms = request["recipient"]["oneOf"]
    obj = next(f for f in forms if f.get("type") == "object")
    assert obj["required"] == ["external_id"]
    assert set(obj["properties"]) == {"external_id", "email", "name"}
    assert obj["properties"]["external_id"]["maxLength"] == 255
    assert request["recipients"]["items"]["oneOf"] == forms
