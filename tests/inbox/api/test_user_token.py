"""POST /api/auth/user-token/: a key with the mint scope gets short-lived tokens for the product's users."""

from datetime import datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from inbox import services
from inbox.api.keys import verified_keys
from inbox.models import ExternalRecipient, ServiceKey

User = get_user_model()


@pytest.fixture(autouse=True)
def _forget_verified_keys():
    verified_keys.clear()
    yield
    verified_keys.clear()


@pytest.fixture
def key_for(make_user):
    service = make_user("web-backend")

    def make(*scopes) -> APIClient:
        _, raw = ServiceKey.objects.create_key(name="web", service=service, scopes=list(scopes))
        client = APIClient(raise_request_exception=False)
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
        return client

    return make


@pytest.fixture
def minter(key_for):
    return key_for("mint")


def mint(client, **body):
    return client.post("/api/auth/user-token/", body, format="json")


def bearer(token: str) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_mint_key_gets_a_token_for_an_unknown_recipient_who_is_created(minter):
    before = timezone.now()
    response = mint(minter, external_id="cust-7", email="g@example.com", name="Grace")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"].startswith("max-age=0") and "no-store" in response["Cache-Control"]
    body = response.json()
    assert set(body) == {"access", "expires_at"}
    row = ExternalRecipient.objects.get()
    assert (row.external_id, row.email, row.name) == ("cust-7", "g@example.com", "Grace")
    token = AccessToken(body["access"])
    assert token["user_id"] == str(row.user_id)  # simplejwt writes the id as a string
    assert token["token_version"] == 0
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires.timestamp() == token["exp"]
    assert before + timedelta(seconds=890) < expires <= timezone.now() + timedelta(seconds=900)


def test_a_known_recipient_gets_a_token_with_200_and_its_profile_updated(minter):
    mint(minter, external_id="cust-7", name="Grace")
    response = mint(minter, external_id="cust-7", name="Grace H.")
    assert response.status_code == 200
    assert ExternalRecipient.objects.get().name == "Grace H."


def test_the_lifetime_follows_minted_token_seconds(minter, settings):
    settings.INBOX = {**getattr(settings, "INBOX", {}), "MINTED_TOKEN_SECONDS": 60}
    body = mint(minter, external_id="short").json()
    assert AccessToken(body["access"])["exp"] - timezone.now().timestamp() <= 60


def test_the_token_carries_the_recipients_current_token_version(minter):
    mint(minter, external_id="cust-8")
    user_id = ExternalRecipient.objects.get().user_id
    services.credentials_revoke(user_id=user_id)
    token = AccessToken(mint(minter, external_id="cust-8").json()["access"])
    assert token["token_version"] == 1
    assert bearer(str(token)).get("/api/notifications/").status_code == 200


def test_the_minted_token_reads_the_recipients_notifications(minter, key_for):
    key_for("send").post("/api/notifications/", {"recipient": {"external_id": "cust-9"}, "title": "Welcome"}, format="json")
    token = mint(minter, external_id="cust-9").json()["access"]
    response = bearer(token).get("/api/notifications/")
    assert response.status_code == 200
    assert [n["title"] for n in response.json()["results"]] == ["Welcome"]
    me = bearer(token).get("/api/me/").json()
    assert (me["external_id"], me["can_send"], me["id"]) == ("cust-9", False, ExternalRecipient.objects.get().user_id)


def test_erasing_the_recipient_revokes_its_minted_token(minter, key_for):
    token = mint(minter, external_id="cust-10").json()["access"]
    assert bearer(token).get("/api/notifications/").status_code == 200
    assert key_for("recipients").delete("/api/recipients/cust-10/").status_code == 204
    assert bearer(token).get("/api/notifications/").status_code == 401


@pytest.mark.parametrize("scopes", [("send",), ("recipients",), ()])
def test_a_key_without_the_mint_scope_is_a_403(key_for, scopes):
    response = mint(key_for(*scopes), external_id="cust-1")
    assert response.status_code == 403
    assert "'mint' scope" in response.json()["detail"]
    assert not ExternalRecipient.objects.exists()


def test_users_may_not_mint_whatever_their_permissions(client_for, make_user):
    boss = make_user("boss", is_staff=True, is_superuser=True)
    response = mint(client_for(boss, raise_exceptions=False), external_id="cust-1")
    assert response.status_code == 403
    assert response.json()["detail"] == "Only an API key with the 'mint' scope may do this."
    assert not ExternalRecipient.objects.exists()


def test_anonymous_minting_is_a_401(anon_client, db):
    assert mint(anon_client, external_id="cust-1").status_code == 401


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "external_id"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": 42}, "external_id"),
        ({"external_id": "x" * 256}, "external_id"),
        ({"external_id": "a\x00"}, "external_id"),
        ({"external_id": "ok", "email": "nope"}, "email"),
        ({"external_id": "ok", "name": "n" * 256}, "name"),
        ({"external_id": "ok", "scope": "admin"}, "scope"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field_and_creates_nobody(minter, body, field):
    response = mint(minter, **body)
    assert response.status_code == 400
    assert field in response.json()
    assert not ExternalRecipient.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(minter):
    assert minter.post("/api/auth/user-token/", ["cust-1"], format="json").status_code == 400


def test_a_deactivated_recipient_gets_no_token(minter):
    mint(minter, external_id="off")
    User.objects.filter(pk=ExternalRecipient.objects.get().user_id).update(is_active=False)
    response = mint(minter, external_id="off")
    assert response.status_code == 409
    assert "deactivated" in response.json()["detail"]


def test_a_local_accounts_name_cannot_be_minted_for(minter, make_user):
    make_user("ext:alice")
    response = mint(minter, external_id="alice")
    assert response.status_code == 400
    assert not ExternalRecipient.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_the_minted_token_opens_the_socket_and_receives_sends_by_external_id(key_for):
    from notifications_site.asgi import application

    minter, sender = await sync_to_async(key_for)("mint"), await sync_to_async(key_for)("send")
    token = (await sync_to_async(mint)(minter, external_id="cust-ws")).json()["access"]
    sock = WebsocketCommunicator(application, f"/ws/notifications/?token={token}", headers=[(b"origin", b"http://127.0.0.1")])
    connected, _ = await sock.connect(timeout=3)
    assert connected
    try:
        while (await sock.receive_json_from(3))["type"] != "sync.done":
            pass
        body = {"recipient": {"external_id": "cust-ws"}, "title": "Live"}
        response = await sync_to_async(sender.post)("/api/notifications/", body, format="json")
        assert response.status_code == 201
        frame = await sock.receive_json_from(3)
        while frame["type"] != "notification.created":
            frame = await sock.receive_json_from(3)
        assert frame["notification"]["title"] == "Live"
    finally:
        await sock.disconnect()
