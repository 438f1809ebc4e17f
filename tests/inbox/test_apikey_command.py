"""``manage.py inbox_apikey create|list|revoke``: keys for services, printed once, stored hashed."""

import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from inbox.api.keys import verified_keys
from inbox.models import Notification, ServiceKey

User = get_user_model()


@pytest.fixture(autouse=True)
def _forget_verified_keys():
    verified_keys.clear()
    yield
    verified_keys.clear()


def run(*args) -> str:
    out = StringIO()
    call_command("inbox_apikey", *args, stdout=out)
    return out.getvalue()


def last_line(out: str) -> str:
    return out.rstrip("\n").split("\n")[-1]


def key_client(raw: str) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


def test_create_prints_the_key_alone_on_the_last_line_and_stores_only_its_hash(db, alice):
    out = run("create", "billing")
    raw = last_line(out)
    key = ServiceKey.objects.get()
    assert raw.startswith(key.prefix + ".")
    assert raw not in (key.id, key.hashed_key)
    assert out.count(raw) == 1
    assert key.scopes == ["send"]
    assert key_client(raw).post("/api/notifications/", {"recipient": "alice", "title": "Paid"}, format="json").status_code == 201
    assert Notification.objects.get().sender.username == "billing"


def test_without_user_the_key_acts_as_a_new_service_account_that_cannot_sign_in(db):
    run("create", "billing", "--scopes", "send,mint")
    service = ServiceKey.objects.select_related("service").get().service
    assert (service.username, service.is_active, service.has_usable_password()) == ("billing", True, False)
    run("create", "billing", "--scopes", "mint")  # a second key for the same service account
    assert User.objects.filter(username="billing").count() == 1
    assert ServiceKey.objects.filter(service=service).count() == 2


def test_scopes_are_stored_sorted_and_once(db):
    run("create", "svc", "--scopes", "recipients, send,mint,send")
    assert ServiceKey.objects.get().scopes == ["mint", "recipients", "send"]


@pytest.mark.parametrize("scopes", ["send,admin", "", ",", "SEND"])
def test_bad_scope_names_are_refused_listing_the_valid_ones(db, scopes):
    with pytest.raises(CommandError, match="Valid scopes: send, mint, recipients"):
        run("create", "svc", "--scopes", scopes)
    assert not ServiceKey.objects.exists()
    assert not User.objects.filter(username="svc").exists()


def test_a_name_of_an_account_with_a_password_is_refused_unless_user_names_it(db, alice):
    with pytest.raises(CommandError, match="--user alice"):
        run("create", "alice")
    assert not ServiceKey.objects.exists()
    raw = last_line(run("create", "alice-key", "--user", "alice"))
    assert ServiceKey.objects.get().service_id == alice.pk
    assert key_client(raw).get("/api/me/").json()["username"] == "alice"


def test_user_must_name_an_existing_active_account(db, make_user):
    with pytest.raises(CommandError, match="No account named 'ghost'"):
        run("create", "k", "--user", "ghost")
    make_user("sleepy", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        run("create", "k", "--user", "sleepy")
    assert not ServiceKey.objects.exists()


def test_expires_sets_the_expiry_and_refuses_nonsense(db):
    run("create", "temp", "--expires", "30")
    expiry = ServiceKey.objects.get().expiry_date
    assert timezone.now() + timedelta(days=29) < expiry < timezone.now() + timedelta(days=31)
    with pytest.raises(CommandError, match="--expires"):
        run("create", "temp2", "--expires", "0")


def test_a_name_too_long_for_a_key_is_refused(db):
    with pytest.raises(CommandError, match="1 to 50 characters"):
        run("create", "n" * 51)


def test_list_shows_prefix_name_service_scopes_created_last_used_and_revoked(db, alice):
    assert run("list") == "No API keys.\n"
    raw = last_line(run("create", "billing", "--scopes", "send,mint"))
    key_client(raw).post("/api/notifications/", {"recipient": "alice", "title": "x"}, format="json")
    prefix = raw.split(".")[0]
    lines = run("list").splitlines()
    assert lines[0].split() == ["prefix", "name", "service", "scopes", "created", "last", "used", "revoked"]
    row = lines[1].split()
    assert row[:4] == [prefix, "billing", "billing", "mint,send"]
    assert row[-1] == "no"
    assert "never" not in lines[1]  # it was used
    assert raw not in "\n".join(lines)


def test_revoke_refuses_the_key_from_then_on(db, alice):
    raw = last_line(run("create", "billing"))
    client = key_client(raw)
    assert client.get("/api/me/").status_code == 200
    out = run("revoke", raw.split(".")[0])
    assert "Revoked" in out
    assert ServiceKey.objects.get().revoked
    assert client.get("/api/me/").status_code == 401
    assert "already revoked" in run("revoke", raw.split(".")[0])
    assert run("list").splitlines()[1].split()[-1] == "yes"


def test_revoke_of_an_unknown_prefix_is_a_clear_error(db):
    with pytest.raises(CommandError, match="No API key has the prefix 'nope'"):
        run("revoke", "nope")


@pytest.mark.django_db(transaction=True)
def test_the_real_command_line_prints_the_key_alone_on_its_last_line(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "notifications_site.settings_test", "PATH": "/usr/bin:/bin"}
    database = settings.DATABASES["default"]  # the test database, which this process created
    env.update({k: v for k, v in os.environ.items() if k in ("DATABASE_URL", "INBOX_TEST_DB")})
    if "sqlite" in database["ENGINE"]:
        env["DATABASE_URL"] = f"sqlite:///{database['NAME']}"
    else:
        credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
        env["DATABASE_URL"] = f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
    result = subprocess.run(
        [sys.executable, "manage.py", "inbox_apikey", "create", "cli-service", "--scopes", "send"],
        capture_output=True, text=True, env=env, cwd=settings.BASE_DIR, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    raw = result.stdout.splitlines()[-1]
    assert raw == raw.strip() and raw.count(".") == 1 and " " not in raw
    assert ServiceKey.objects.get().prefix == raw.split(".")[0]
