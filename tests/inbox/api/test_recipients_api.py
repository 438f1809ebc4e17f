"""/api/recipients/<external_id>/: provision (PUT), read (GET) and erase (DELETE) the product's recipients."""

from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from rest_framework.test import APIClient

from inbox.api.keys import verified_keys
from inbox.models import ExternalRecipient, Notification, ServiceKey

User = get_user_model()


@pytest.fixture(autouse=True)
def _forget_verified_keys():
    verified_keys.clear()
    yield
    verified_keys.clear()


@pytest.fixture
def keys(make_user):
    """API clients by scope: keys["recipients"], keys["send"], keys["mint"]."""
    service = make_user("crm")
    clients = {}
    for scope in ("recipients", "send", "mint"):
        _, raw = ServiceKey.objects.create_key(name=scope, service=service, scopes=[scope])
        client = APIClient(raise_request_exception=False)
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
        clients[scope] = client
    return clients


@pytest.fixture
def admin_api(keys):
    return keys["recipients"]


def url(external_id: str) -> str:
    return f"/api/recipients/{quote(external_id, safe='')}/"


def test_put_provisions_an_unknown_recipient_with_201(admin_api):
    response = admin_api.put(url("cust-1"), {"email": "ada@example.com", "name": "Ada"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in ("external_id", "email", "name")} == {"external_id": "cust-1", "email": "ada@example.com", "name": "Ada"}
    assert set(body) == {"external_id", "email", "name", "created_at", "updated_at"}
    row = ExternalRecipient.objects.select_related("user").get()
    assert not row.user.has_usable_password()


def test_put_updates_a_known_recipient_with_200_and_leaves_absent_fields_as_they_are(admin_api):
    admin_api.put(url("cust-1"), {"email": "ada@example.com", "name": "Ada"}, format="json")
    response = admin_api.put(url("cust-1"), {"name": "Ada L."}, format="json")
    assert response.status_code == 200
    assert (response.json()["email"], response.json()["name"]) == ("ada@example.com", "Ada L.")
    assert response.json()["updated_at"] > response.json()["created_at"]
    assert ExternalRecipient.objects.count() == 1


def test_put_with_an_empty_body_provisions_and_an_empty_string_clears(admin_api):
    assert admin_api.put(url("c"), {}, format="json").status_code == 201
    admin_api.put(url("c"), {"email": "c@example.com"}, format="json")
    assert admin_api.put(url("c"), {"email": ""}, format="json").json()["email"] == ""


def test_get_reads_a_recipient_and_404s_an_unknown_one(admin_api):
    admin_api.put(url("cust-1"), {"name": "Ada"}, format="json")
    response = admin_api.get(url("cust-1"))
    assert response.status_code == 200
    assert response.json()["name"] == "Ada"
    assert admin_api.get(url("nobody")).status_code == 404


@pytest.mark.parametrize("external_id", ["ada@example.com", "tenant/42/user", "with space", "ü-ñ-中", "50%off", "a?b#c", "trailing/"])
def test_external_ids_with_any_characters_travel_url_encoded(admin_api, external_id):
    assert admin_api.put(url(external_id), {"name": "X"}, format="json").status_code == 201
    assert ExternalRecipient.objects.get().external_id == external_id
    assert admin_api.get(url(external_id)).json()["external_id"] == external_id
    assert admin_api.delete(url(external_id)).status_code == 204


def test_reverse_builds_a_url_that_resolves_to_the_same_external_id(admin_api):
    path = reverse("recipient-detail", kwargs={"external_id": "tenant/7 ü"})
    assert admin_api.put(path, {}, format="json").status_code == 201
    assert ExternalRecipient.objects.get().external_id == "tenant/7 ü"


def test_an_external_id_over_255_characters_is_a_400(admin_api):
    for method in ("get", "put", "delete"):
        response = getattr(admin_api, method)(url("x" * 256), {}, format="json")
        assert response.status_code == 400
        assert "external_id" in response.json()
    assert not ExternalRecipient.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": 5}, "email"),
        ({"name": "n" * 256}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"role": "admin"}, "role"),
        ({"external_id": "other"}, "external_id"),
    ],
)
def test_a_bad_profile_is_a_400_naming_the_field_and_stores_nothing(admin_api, body, field):
    response = admin_api.put(url("cust-1"), body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not ExternalRecipient.objects.exists()
    assert not User.objects.filter(username__startswith="ext:").exists()


def test_a_body_that_is_not_an_object_is_a_400(admin_api):
    assert admin_api.put(url("cust-1"), ["Ada"], format="json").status_code == 400
    assert not ExternalRecipient.objects.exists()


def test_a_local_account_is_not_reachable_here(admin_api, alice):
    assert admin_api.get(url("alice")).status_code == 404
    assert admin_api.delete(url("alice")).status_code == 404
    assert User.objects.filter(pk=alice.pk).exists()


def test_delete_erases_the_recipient_with_all_their_notifications(admin_api, keys, alice):
    keys["send"].post("/api/notifications/", {"recipients": [{"external_id": "gone"}, "alice"], "title": "Hi"}, format="json")
    user_id = ExternalRecipient.objects.get().user_id
    assert Notification.objects.filter(recipient_id=user_id).count() == 1
    response = admin_api.delete(url("gone"))
    assert response.status_code == 204
    assert not ExternalRecipient.objects.exists()
    assert not User.objects.filter(pk=user_id).exists()
    assert not Notification.objects.filter(recipient_id=user_id).exists()
    assert Notification.objects.filter(recipient=alice).count() == 1
    assert admin_api.delete(url("gone")).status_code == 404


def test_a_key_with_the_send_scope_may_provision_and_read_but_not_erase(keys):
    assert keys["send"].put(url("c"), {}, format="json").status_code == 201
    assert keys["send"].get(url("c")).status_code == 200
    response = keys["send"].delete(url("c"))
    assert response.status_code == 403
    assert "'recipients' scope" in response.json()["detail"]
    assert ExternalRecipient.objects.exists()


def test_a_key_with_only_the_mint_scope_may_do_nothing_here(keys):
    response = keys["mint"].put(url("c"), {}, format="json")
    assert response.status_code == 403
    assert "'recipients' scope" in response.json()["detail"]
    assert keys["mint"].get(url("c")).status_code == 403
    assert not ExternalRecipient.objects.exists()


def test_users_need_the_manage_recipients_permission_to_erase_and_may_provision_with_send(make_user, client_for, admin_api):
    admin_api.put(url("c"), {}, format="json")
    sender = make_user("sender", can_send=True)
    nobody = make_user("nobody")
    manager = make_user("manager")
    manager.user_permissions.add(Permission.objects.get(codename="manage_recipients", content_type__app_label="inbox"))
    assert client_for(nobody, raise_exceptions=False).put(url("d"), {}, format="json").status_code == 403
    assert client_for(sender).put(url("d"), {}, format="json").status_code == 201
    assert client_for(sender, raise_exceptions=False).delete(url("c")).status_code == 403
    assert client_for(manager).delete(url("c")).status_code == 204


def test_anonymous_requests_are_a_401(anon_client, db):
    assert anon_client.put(url("c"), {}, format="json").status_code == 401
    assert not ExternalRecipient.objects.exists()


def test_a_recipient_provisioned_ahead_receives_sends_by_its_external_id(admin_api, keys):
    admin_api.put(url("cust-5"), {"name": "Eve"}, format="json")
    response = keys["send"].post("/api/notifications/", {"recipient": {"external_id": "cust-5"}, "title": "Hi"}, format="json")
    assert response.status_code == 201
    assert response.json()["recipient"] == ExternalRecipient.objects.get().user_id
    assert ExternalRecipient.objects.get().name == "Eve"
