"""Authorization: Api-Key <key>: services send with a key, scoped, revocable, remembered briefly."""

from datetime import timedelta

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from inbox.api.keys import verified_keys
from inbox.models import IdempotencyKey, Notification, ServiceKey


@pytest.fixture(autouse=True)
def _forget_verified_keys():
    verified_keys.clear()
    yield
    verified_keys.clear()


@pytest.fixture
def service(make_user):
    """A service account with no send permission of its own: its keys' scopes decide."""
    return make_user("shop-backend")


@pytest.fixture
def make_key(service):
    def make(*scopes, user=None, **fields):
        return ServiceKey.objects.create_key(name="shop", service=user or service, scopes=list(scopes or ["send"]), **fields)

    return make


def key_client(raw: str) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


def send(client, **body):
    return client.post("/api/notifications/", {"recipient": "alice", "title": "Order shipped", **body}, format="json")


def test_a_key_with_the_send_scope_sends_as_its_service_account(make_key, service, alice):
    key, raw = make_key("send")
    response = send(key_client(raw))
    assert response.status_code == 201, response.content
    assert response.json()["sender"] == "shop-backend"
    n = Notification.objects.get()
    assert (n.recipient_id, n.sender_id) == (alice.pk, service.pk)


def test_the_scheme_keyword_is_case_insensitive(make_key, alice):
    _, raw = make_key("send")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"api-key {raw}")
    assert send(client).status_code == 201


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key wrongpre.abcdefghijklmnopqrstuvwxyz012345",
        "Api-Key ",
        "Api-Key not-a-key",
        "Api-Key abc\x00def.xyz",
        "Api-Key " + "a" * 8 + "." + "b" * 5000,
        "Api-Key abcdefgh.ijklm nopq",
    ],
    ids=["unknown", "empty", "no-dot", "nul", "huge", "space"],
)
def test_a_wrong_or_malformed_key_is_a_401_that_names_the_api_key_scheme(header, alice):
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=header)
    response = send(client)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert "API key" in response.json()["detail"]
    assert not Notification.objects.exists()


def test_a_right_prefix_with_a_wrong_secret_is_a_401(make_key, alice):
    key, raw = make_key("send")
    response = send(key_client(f"{key.prefix}.{'x' * 32}"))
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or revoked API key."


def test_a_revoked_key_is_refused_at_once_in_the_process_that_revoked_it(make_key, alice):
    key, raw = make_key("send")
    client = key_client(raw)
    assert send(client).status_code == 201  # now remembered by this process
    key.revoked = True
    key.save()
    response = send(client)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert Notification.objects.count() == 1


def test_a_revocation_by_another_process_takes_effect_once_the_remembered_key_expires(make_key, alice):
    key, raw = make_key("send")
    client = key_client(raw)
    assert send(client).status_code == 201
    ServiceKey.objects.filter(pk=key.pk).update(revoked=True)  # as another process would: no signal here
    assert send(client).status_code == 201  # within DIRECTORY_CACHE_SECONDS
    verified_keys.clear()  # those seconds have passed
    assert send(client).status_code == 401


def test_keys_are_remembered_under_a_digest_never_the_raw_key(make_key, alice):
    _, raw = make_key("send")
    assert send(key_client(raw)).status_code == 201
    remembered = list(verified_keys._cache._data)
    assert remembered == [verified_keys.digest(raw)]
    assert all(raw.encode() not in k and raw not in repr(k) for k in remembered)


def test_an_expired_key_is_a_401(make_key, alice):
    _, raw = make_key("send", expiry_date=timezone.now() - timedelta(minutes=1))
    response = send(key_client(raw))
    assert response.status_code == 401
    assert response.json()["detail"] == "This API key has expired."


def test_a_key_remembered_before_it_expired_is_refused_once_it_expires(make_key, alice):
    key, raw = make_key("send", expiry_date=timezone.now() + timedelta(hours=1))
    client = key_client(raw)
    assert send(client).status_code == 201
    verified_keys.get(raw).key.expiry_date = timezone.now() - timedelta(seconds=1)  # an hour later
    assert send(client).status_code == 401


def test_a_key_of_an_inactive_service_account_is_a_401(make_key, service, alice):
    _, raw = make_key("send")
    client = key_client(raw)
    assert send(client).status_code == 201
    service.is_active = False
    service.save()
    response = send(client)
    assert response.status_code == 401
    assert response.json()["detail"] == "The service account of this API key is inactive."


def test_a_key_without_the_send_scope_is_a_403_naming_the_scope(make_key, alice):
    _, raw = make_key("mint")
    response = send(key_client(raw))
    assert response.status_code == 403
    assert "'send' scope" in response.json()["detail"]
    assert not Notification.objects.exists()


def test_a_key_needs_no_send_permission_of_its_account_and_the_permission_needs_no_key(make_key, service, client_for, alice):
    _, raw = make_key("send")
    assert send(key_client(raw)).status_code == 201
    assert send(client_for(service, raise_exceptions=False)).status_code == 403  # the same account by JWT


def test_jwt_senders_keep_working_beside_keys(sender_client, alice):
    assert send(sender_client).status_code == 201


def test_last_used_is_written_once_a_minute_not_once_per_send(make_key, alice):
    key, raw = make_key("send")
    client = key_client(raw)
    before = timezone.now()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert send(client).status_code == 201
    key.refresh_from_db()
    assert key.last_used_at is not None and key.last_used_at >= before
    writes = [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "servicekey" in q["sql"]]
    assert len(writes) == 1
    # Only the first send read the key: the others found it remembered.
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and "servicekey" in q["sql"]]
    assert len(reads) == 1


def test_last_used_is_written_again_after_a_minute(make_key, alice):
    key, raw = make_key("send")
    client = key_client(raw)
    assert send(client).status_code == 201
    earlier = timezone.now() - timedelta(minutes=2)
    ServiceKey.objects.filter(pk=key.pk).update(last_used_at=earlier)
    verified_keys.get(raw).last_used -= 120  # as if two minutes had passed
    assert send(client).status_code == 201
    key.refresh_from_db()
    assert key.last_used_at > earlier + timedelta(minutes=1)


def test_idempotency_keys_belong_to_the_service_account_whichever_of_its_keys_sends(make_key, alice):
    _, first = make_key("send")
    _, second = make_key("send")
    body = {"recipient": "alice", "title": "Once"}
    a = key_client(first).post("/api/notifications/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-7")
    b = key_client(second).post("/api/notifications/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-7")
    assert (a.status_code, b.status_code) == (201, 201)
    assert b["Idempotent-Replayed"] == "true"
    assert a.json() == b.json()
    assert Notification.objects.count() == 1
    assert IdempotencyKey.objects.get().sender.username == "shop-backend"


def test_me_answers_for_a_key_with_its_scopes(make_key, service):
    _, sender = make_key("send")
    _, minter = make_key("mint")
    assert key_client(sender).get("/api/me/").json() == {"id": service.pk, "username": "shop-backend", "external_id": None, "can_send": True}
    assert key_client(minter).get("/api/me/").json()["can_send"] is False


def test_the_schema_documents_the_api_key_scheme(client, db):
    schema = yaml.safe_load(client.get("/api/schema/").content)
    scheme = schema["components"]["securitySchemes"]["apiKeyAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert {"apiKeyAuth": []} in schema["paths"]["/api/notifications/"]["post"]["security"]


# --- The admin ------------------------------------------------------------------------------------


@pytest.fixture
def operator_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_the_admin_creates_a_key_with_scope_checkboxes_and_shows_it_once(operator_client, service, alice):
    form = operator_client.get("/admin/inbox/servicekey/add/")
    assert form.status_code == 200
    assert b'type="checkbox" name="scopes" value="mint"' in form.content
    response = operator_client.post(
        "/admin/inbox/servicekey/add/", {"name": "shop", "service": service.pk, "scopes": ["send", "mint"]}, follow=True
    )
    assert response.status_code == 200
    key = ServiceKey.objects.get()
    assert (key.service_id, key.scopes) == (service.pk, ["mint", "send"])
    [message] = [str(m) for m in response.context["messages"] if "The API key for" in str(m)]  # beside "added successfully"
    raw = message.split("The API key for shop is: ")[1].split(". ")[0]
    assert raw.startswith(key.prefix + ".") and raw not in (key.id, key.hashed_key)
    assert send(key_client(raw)).status_code == 201
    changelist = operator_client.get("/admin/inbox/servicekey/")
    assert changelist.status_code == 200
    assert b"mint, send" in changelist.content
    assert raw.encode() not in changelist.content and raw.encode() not in operator_client.get(f"/admin/inbox/servicekey/{key.pk}/change/").content


def test_the_admin_revokes_a_key_and_it_is_refused_at_once(operator_client, make_key, service, alice):
    key, raw = make_key("send")
    assert send(key_client(raw)).status_code == 201
    response = operator_client.post(
        f"/admin/inbox/servicekey/{key.pk}/change/", {"name": "shop", "service": service.pk, "scopes": ["send"], "revoked": "on"}
    )
    assert response.status_code == 302
    assert send(key_client(raw)).status_code == 401


def test_the_librarys_own_unused_key_model_is_not_in_the_admin(operator_client):
    assert operator_client.get("/admin/rest_framework_api_key/apikey/").status_code == 404
