"""Management commands: ``notify`` (send from the shell, and what it says of the push) and ``inbox_demo`` (demo accounts)."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from inbox.models import Notification


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_notify_stores_and_pushes_a_notification(alice, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out = run("notify", "alice", "Deploy finished", "--message", "v2.3 is live", "--category", "ops")
    n = Notification.objects.get()
    assert (n.recipient_id, n.title, n.message, n.category, n.sender_id) == (alice.pk, "Deploy finished", "v2.3 is live", "ops", None)
    assert f"stored #{n.id} for alice: Deploy finished" in out
    assert len(pushed) == 1
    assert pushed[0][0] == alice.pk
    assert pushed[0][1]["type"] == "notification.created"
    assert pushed[0][1]["notification"]["title"] == "Deploy finished"


def test_notify_sends_to_several_users_with_data_link_and_sender(alice, bob, service_account, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run(
            "notify", "alice,bob", "Invoice", "--data", json.dumps({"invoice": 7}),
            "--link", "https://example.com/i/7", "--sender", "billing-service",
        )
    rows = list(Notification.objects.order_by("id"))
    assert [n.recipient_id for n in rows] == [alice.pk, bob.pk]
    assert {(n.sender_id, n.link) for n in rows} == {(service_account.pk, "https://example.com/i/7")}
    assert rows[0].data == {"invoice": 7}
    assert pushed.users() == [alice.pk, bob.pk]


def test_notify_to_an_unknown_user_is_a_command_error(alice, pushed):
    with pytest.raises(CommandError, match="nobody"):
        run("notify", "nobody", "Hello")
    assert not Notification.objects.exists()
    assert pushed == []


@pytest.mark.parametrize(
    "args,match",
    [
        (["alice", "Hi", "--data", "{not json"], "--data"),
        (["alice", "Hi", "--data", "[1, 2]"], "data"),
        (["alice", "x" * 201], "title"),
        (["alice", "Hi", "--category", "not a slug"], "category"),
        (["alice", "Hi", "--sender", "ghost"], "ghost"),
        ([",", "Hi"], "recipients"),
    ],
)
def test_notify_refuses_bad_arguments(alice, args, match):
    with pytest.raises(CommandError, match=match):
        run("notify", *args)
    assert not Notification.objects.exists()


@pytest.fixture
def demo_mode(monkeypatch):
    """INBOX_DEMO=1: tests run with DEBUG off, where the demo accounts are refused (tests/inbox/test_demo_mode.py)."""
    monkeypatch.setenv("INBOX_DEMO", "1")


def test_inbox_demo_creates_the_demo_accounts(db, demo_mode):
    out = run("inbox_demo")
    User = get_user_model()
    alice, bob, service, admin = (User.objects.get(username=n) for n in ("alice", "bob", "billing-service", "admin"))
    assert alice.check_password("alice-password") and bob.check_password("bob-password")
    assert not alice.has_perm("inbox.send_notification")
    assert service.has_perm("inbox.send_notification")
    assert service.check_password("service-password")
    assert admin.is_staff and admin.is_superuser and admin.check_password("admin-password")
    assert "billing-service" in out


def test_inbox_demo_is_idempotent(db, demo_mode):
    run("inbox_demo")
    run("inbox_demo")
    User = get_user_model()
    assert sorted(User.objects.values_list("username", flat=True)) == ["admin", "alice", "billing-service", "bob"]
    assert User.objects.get(username="billing-service").groups.count() == 1


def test_the_demo_service_account_can_send_through_the_api(db, client_for, demo_mode):
    run("inbox_demo")
    User = get_user_model()
    response = client_for(User.objects.get(username="billing-service")).post(
        "/api/notifications/", {"recipient": "alice", "title": "Hello"}, format="json"
    )
    assert response.status_code == 201


# --- What notify says about the push --------------------------------------------------------


def test_notify_under_the_in_memory_layer_says_plainly_that_open_pages_see_it_only_at_their_next_load(alice, pushed, django_capture_on_commit_callbacks):
    # make run has no REDIS_URL: each process has its own in-memory layer, the shell's reaches no server socket.
    with django_capture_on_commit_callbacks(execute=True):
        out = run("notify", "alice", "Deploy finished")
    assert "sent" not in out
    assert "Not pushed live" in out
    assert "reconnect or are reloaded" in out
    assert "REDIS_URL" in out
    assert Notification.objects.filter(recipient=alice, title="Deploy finished").exists()


def test_notify_with_redis_says_it_pushed(alice, redis_channel_layer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out = run("notify", "alice", "Deploy finished")
    assert out.splitlines()[-1] == "Pushed to the recipients' open pages."


def test_notify_without_delivery_backends_says_nothing_is_pushed(alice, settings):
    settings.INBOX = {**getattr(settings, "INBOX", {}), "DELIVERY_BACKENDS": []}
    out = run("notify", "alice", "Deploy finished")
    assert "Not pushed" in out and "DELIVERY_BACKENDS" in out
    assert Notification.objects.filter(recipient=alice).count() == 1


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_notify_with_redis_reaches_a_socket_of_a_running_server(alice, daphne_factory, redis_url, settings):
    import asyncio

    from channels.layers import channel_layers

    from tests.conftest import access_token_for
    from tests.realtime.conftest import open_client, recv_json

    server = daphne_factory(redis_url=redis_url)
    # This process on the server's channel layer, as REDIS_URL gives both (notifications_site/settings/realtime.py).
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.layers.BatchingRedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}}
    channel_layers.backends.clear()

    async def scenario():
        ws, done = await open_client(server, access_token_for(alice))
        assert done["type"] == "sync.done"
        out = await asyncio.to_thread(run, "notify", "alice", "From the shell")
        frame = await recv_json(ws, timeout=5)
        await ws.close()
        return out, frame

    try:
        out, frame = asyncio.run(scenario())
    finally:
        channel_layers.backends.clear()
    assert frame["type"] == "notification.created"
    assert frame["notification"]["title"] == "From the shell"
    assert out.splitlines()[-1] == "Pushed to the recipients' open pages."
