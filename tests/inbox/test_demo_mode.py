"""
Demo accounts exist in demo mode only: INBOX_DEMO=1, or DJANGO_DEBUG on when INBOX_DEMO is not set.

``make run`` runs ``inbox_demo --if-demo``: a working demo from a fresh clone (DEBUG is on by
default), and with DJANGO_DEBUG=0 no account with a known password, the bootstrap commands instead.
"""

from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[2]
DEMO_NAMES = ["admin", "alice", "billing-service", "bob"]


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def usernames() -> list[str]:
    return sorted(get_user_model().objects.values_list("username", flat=True))


@pytest.fixture
def production(settings, monkeypatch):
    settings.DEBUG = False
    monkeypatch.delenv("INBOX_DEMO", raising=False)


def test_with_debug_off_and_no_inbox_demo_the_command_refuses_and_names_the_bootstrap_commands(db, production):
    with pytest.raises(CommandError) as refused:
        run("inbox_demo")
    message = str(refused.value)
    assert "Not in demo mode" in message and "INBOX_DEMO=1" in message
    assert "python manage.py createsuperuser" in message
    assert "python manage.py inbox_apikey create <name> --scopes send" in message
    assert usernames() == []


def test_make_runs_form_with_debug_off_creates_nothing_and_exits_cleanly(db, production):
    out, err = run("inbox_demo", "--if-demo")
    assert "Demo mode is off" in out and "createsuperuser" in out
    assert err == ""
    assert usernames() == []


def test_with_debug_on_and_no_inbox_demo_the_demo_accounts_are_created(db, settings, monkeypatch):
    settings.DEBUG = True  # a fresh clone's make run
    monkeypatch.delenv("INBOX_DEMO", raising=False)
    out, _ = run("inbox_demo", "--if-demo")
    assert usernames() == DEMO_NAMES
    assert "admin-password" in out


def test_inbox_demo_1_creates_them_with_debug_off(db, production, monkeypatch):
    monkeypatch.setenv("INBOX_DEMO", "1")
    run("inbox_demo")
    assert usernames() == DEMO_NAMES


@pytest.mark.parametrize("value", ["0", "false", "no", "off"])
def test_inbox_demo_0_refuses_even_with_debug_on(db, settings, monkeypatch, value):
    settings.DEBUG = True
    monkeypatch.setenv("INBOX_DEMO", value)
    with pytest.raises(CommandError, match=f"INBOX_DEMO={value}"):
        run("inbox_demo")
    assert usernames() == []


def test_a_value_of_inbox_demo_that_means_nothing_is_a_clear_error(db, production, monkeypatch):
    monkeypatch.setenv("INBOX_DEMO", "maybe")
    with pytest.raises(CommandError, match="INBOX_DEMO='maybe'"):
        run("inbox_demo", "--if-demo")
    assert usernames() == []


def test_demo_accounts_left_from_an_earlier_demo_are_named_in_a_warning(db, production, monkeypatch):
    monkeypatch.setenv("INBOX_DEMO", "1")
    run("inbox_demo")
    User = get_user_model()
    bob = User.objects.get(username="bob")
    bob.set_password("a-real-password-now")
    bob.save()
    User.objects.filter(username="alice").update(is_active=False)
    monkeypatch.delenv("INBOX_DEMO")
    out, err = run("inbox_demo", "--if-demo")
    assert "WARNING" in err
    assert "admin, billing-service" in err  # bob has a real password now, alice is deactivated
    assert "bob" not in err and "alice" not in err
    assert "Demo mode is off" in out


def test_make_run_runs_the_demo_command_in_its_skipping_form():
    makefile = (ROOT / "Makefile").read_text()
    assert "manage.py inbox_demo --if-demo" in makefile
    assert "manage.py inbox_demo\n" not in makefile


def test_the_docker_image_runs_with_debug_off_and_never_creates_demo_accounts():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "DJANGO_DEBUG=0" in dockerfile
    assert "INBOX_DEMO=1" not in dockerfile
    assert "inbox_demo" not in "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
