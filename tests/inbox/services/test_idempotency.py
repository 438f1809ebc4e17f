"""Idempotency-Key on POST /api/notifications/: retries replay the first response and create nothing new."""

import threading

import pytest
from django.db import connections

from inbox.models import IdempotencyKey, Notification

SEND = {"recipient": "alice", "title": "Invoice paid", "data": {"invoice": 1}}


def post(client, body, key):
    return client.post("/api/notifications/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_retry_with_the_same_key_replays_the_first_response(sender_client, alice):
    first = post(sender_client, SEND, "invoice-1-paid")
    assert first.status_code == 201
    assert not first.has_header("Idempotent-Replayed")
    retry = post(sender_client, SEND, "invoice-1-paid")
    assert retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert Notification.objects.count() == 1


def test_a_retry_pushes_nothing_again(sender_client, alice, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post(sender_client, SEND, "k1")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post(sender_client, SEND, "k1")
    assert len(pushed) == 1
    assert callbacks == []


def test_a_bulk_send_retry_replays_the_count_and_ids(sender_client, alice, bob):
    body = {"recipients": ["alice", "bob"], "title": "Maintenance"}
    first = post(sender_client, body, "maint-2024")
    retry = post(sender_client, body, "maint-2024")
    assert retry.json() == first.json()
    assert retry.json()["count"] == 2
    assert Notification.objects.count() == 2


def test_the_same_body_with_keys_in_another_order_is_the_same_request(sender_client, alice):
    post(sender_client, {"title": "T", "recipient": "alice", "data": {"b": 1, "a": 2}}, "k")
    retry = post(sender_client, {"data": {"a": 2, "b": 1}, "recipient": "alice", "title": "T"}, "k")
    assert retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"


def test_the_same_key_with_a_different_body_is_422(sender_client, alice):
    post(sender_client, SEND, "invoice-1-paid")
    response = post(sender_client, {**SEND, "title": "Something else"}, "invoice-1-paid")
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert Notification.objects.count() == 1


def test_keys_are_per_sender(client_for, make_user, alice):
    one = make_user("service-one", can_send=True)
    two = make_user("service-two", can_send=True)
    first = post(client_for(one), SEND, "shared-key")
    second = post(client_for(two), SEND, "shared-key")
    assert first.status_code == second.status_code == 201
    assert not second.has_header("Idempotent-Replayed")
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["sender"] == "service-two"
    assert Notification.objects.count() == 2


def test_a_request_that_failed_validation_does_not_use_up_the_key(sender_client, alice):
    bad = post(sender_client, {**SEND, "recipient": "nobody"}, "k")
    assert bad.status_code == 400
    assert not IdempotencyKey.objects.exists()
    good = post(sender_client, {**SEND, "recipient": "nobody"} | {"recipient": "alice"}, "k")
    assert good.status_code == 201
    assert not good.has_header("Idempotent-Replayed")


def test_sends_without_a_key_are_not_deduplicated(sender_client, alice):
    sender_client.post("/api/notifications/", SEND, format="json")
    sender_client.post("/api/notifications/", SEND, format="json")
    assert Notification.objects.count() == 2


def test_a_forbidden_sender_cannot_probe_keys(alice_client, bob):
    response = post(alice_client, {"recipient": "bob", "title": "x"}, "k")
    assert response.status_code == 403
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize("key", ["", " ", "has space", "x" * 256, "ключ", "tab\there"])
def test_a_bad_idempotency_key_is_400(sender_client, alice, key):
    response = post(sender_client, SEND, key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not Notification.objects.exists()


def test_a_255_character_key_is_accepted(sender_client, alice):
    key = "k" * 255
    assert post(sender_client, SEND, key).status_code == 201
    assert post(sender_client, SEND, key)["Idempotent-Replayed"] == "true"


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_the_same_key_create_exactly_one_notification(make_user, client_for):
    make_user("alice")
    sender = make_user("billing-service", can_send=True)
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    results: list = [None] * threads_count

    def worker(i: int) -> None:
        try:
            client = client_for(sender)
            barrier.wait(timeout=10)
            response = client.post("/api/notifications/", SEND, format="json", HTTP_IDEMPOTENCY_KEY="concurrent-key")
            results[i] = (response.status_code, response.json(), response.has_header("Idempotent-Replayed"))
        except Exception as exc:  # reported by the assertions below
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert all(isinstance(r, tuple) for r in results), results
    assert [status for status, _, _ in results] == [201] * threads_count, results
    assert Notification.objects.count() == 1
    assert IdempotencyKey.objects.count() == 1
    ids = {body["id"] for _, body, _ in results}
    assert ids == {Notification.objects.get().id}
    assert sum(1 for _, _, replayed in results if not replayed) == 1
