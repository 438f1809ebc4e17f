"""
The inbox page and inbox-client.js in a real browser (headless Chromium) against real daphne.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from inbox.models import Notification

from .support import expect, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

UNREAD = re.compile(r"\bunread\b")


def items(page):
    return page.locator("#list .notification")


def item(page, notification_id):
    return page.locator(f'#list .notification[data-id="{notification_id}"]')


def badge(page):
    return page.locator("#badge")


def listed_ids(page) -> list[int]:
    return [int(i) for i in page.eval_on_selector_all("#list .notification", "els => els.map(e => e.dataset.id)")]


def test_a_notification_reaches_only_its_recipient_within_two_seconds_and_the_badge_counts_up(inbox_server, make_user, pages, api):
    server = inbox_server()
    make_user("billing", can_send=True)
    alice_user = make_user("alice")
    make_user("bob")
    alice = sign_in(pages.page(), server, "alice")  # two users, two browser contexts
    bob = sign_in(pages.page(), server, "bob")
    expect(badge(alice)).to_be_hidden()
    billing = api(server, "billing")

    for count in (1, 2):
        started = time.monotonic()
        sent = billing.send("alice", f"Invoice {count} paid", category="billing", link="https://example.com/invoices")
        expect(item(alice, sent["id"])).to_be_visible(timeout=2000)
        arrived = time.monotonic() - started
        assert arrived < 2.0, f"arrived {arrived:.2f} s after the send"
        expect(badge(alice)).to_have_text(str(count), timeout=2000)
        expect(item(alice, sent["id"])).to_have_class("notification unread fresh")
        expect(alice.locator(".toast", has_text=f"Invoice {count} paid")).to_be_visible()

    # Bob's page is live (his own notification arrives) but never saw Alice's.
    to_bob = billing.send("bob", "Your report is ready", category="reports")
    expect(item(bob, to_bob["id"])).to_be_visible(timeout=2000)
    expect(badge(bob)).to_have_text("1")
    assert listed_ids(bob) == [to_bob["id"]]
    assert len(listed_ids(alice)) == 2
    expect(badge(alice)).to_have_text("2")

    # What the page showed, it acked: the notifications are delivered now.
    deadline = time.monotonic() + 3
    while Notification.objects.filter(recipient=alice_user, delivered_at__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Notification.objects.filter(recipient=alice_user, delivered_at__isnull=True).exists()


def test_marking_read_in_one_tab_updates_the_other_tab_without_reload(inbox_server, make_user, pages, api):
    server = inbox_server()
    make_user("billing", can_send=True)
    make_user("carol")
    context = pages.context()
    tab1 = sign_in(pages.page(context), server, "carol")
    tab2 = sign_in(pages.page(context), server, "carol")
    tab2.evaluate("window.__sameDocument = true")  # gone if the tab reloads
    billing = api(server, "billing")
    sent = [billing.send("carol", f"Payment {i}", category="billing") for i in range(3)]
    for tab in (tab1, tab2):
        expect(items(tab)).to_have_count(3)
        expect(badge(tab)).to_have_text("3")

    item(tab1, sent[0]["id"]).click()
    expect(badge(tab1)).to_have_text("2")
    expect(badge(tab2)).to_have_text("2")
    expect(item(tab2, sent[0]["id"])).not_to_have_class(UNREAD)
    expect(item(tab2, sent[0]["id"])).to_have_attribute("aria-label", "Payment 0")
    expect(tab2.locator("#list .notification.unread")).to_have_count(2)

    tab1.click("#mark-all")
    expect(badge(tab2)).to_be_hidden()
    expect(tab2.locator("#list .notification.unread")).to_have_count(0)
    assert tab2.evaluate("window.__sameDocument") is True
    carol = api(server, "carol")
    assert carol.get("/api/notifications/unread-count/") == {"unread": 0}


def test_notifications_sent_while_the_server_was_down_appear_once_after_it_restarts(inbox_server, redis_url, make_user, pages, api):
    # Two server processes sharing Redis and the database: the page lives on one, which is
    # restarted; the sender uses the other one, which stays up.
    page_server = inbox_server(redis_url=redis_url)
    api_server = inbox_server(redis_url=redis_url)
    make_user("billing", can_send=True)
    make_user("dave")
    page = sign_in(pages.page(), page_server, "dave")
    billing = api(api_server, "billing")

    first = billing.send("dave", "Before the restart")
    expect(item(page, first["id"])).to_be_visible(timeout=2000)  # live, through Redis

    page_server.stop()
    expect(page.locator("#conn")).to_have_attribute("data-status", "reconnecting", timeout=5000)
    away = [billing.send("dave", f"While you were away {i}") for i in range(2)]
    api(api_server, "dave").post(f"/api/notifications/{first['id']}/read/")  # read on another device meanwhile
    page_server.start()

    for sent in away:
        expect(item(page, sent["id"])).to_be_visible(timeout=15_000)
    expect(page.locator("#conn")).to_have_attribute("data-status", "open")
    expect(badge(page)).to_have_text("2")
    expect(page.locator(".toast", has_text="2 new notifications")).to_be_visible()
    expect(item(page, first["id"])).not_to_have_class(UNREAD)

    after = billing.send("dave", "After the restart")
    expect(item(page, after["id"])).to_be_visible(timeout=2000)
    ids = listed_ids(page)
    assert ids == [after["id"], away[1]["id"], away[0]["id"], first["id"]]  # each once, newest first
    expect(badge(page)).to_have_text("3")


def test_the_socket_refreshes_an_expired_token_and_misses_nothing(inbox_server, make_user, pages, api):
    # Access tokens live 2 s: the server closes the socket with 4401 when one expires; the page
    # gets a fresh token with its refresh token and resumes after the last id it saw.
    server = inbox_server(env={"JWT_ACCESS_TOKEN_SECONDS": "2"})
    make_user("billing", can_send=True)
    make_user("erin")
    page = pages.page()
    refreshes = []
    page.on("request", lambda r: refreshes.append(r.url) if r.url.endswith("/api/auth/token/refresh/") else None)
    sign_in(page, server, "erin")
    billing = api(server, "billing")
    sent = []
    for i in range(6):  # across at least two expiries
        sent.append(billing.send("erin", f"Tick {i}"))
        time.sleep(0.7)
    for n in sent:
        expect(item(page, n["id"])).to_be_visible(timeout=5000)
    assert len(refreshes) >= 2, refreshes
    assert listed_ids(page) == [n["id"] for n in reversed(sent)]
    expect(badge(page)).to_have_text("6")
    expect(page.locator("#conn")).not_to_have_attribute("data-status", "unauthorized")


def test_the_list_is_newest_first_with_category_time_and_link_and_loads_older_pages(inbox_server, make_user, pages, api):
    server = inbox_server()
    make_user("billing", can_send=True)
    make_user("frank")
    billing = api(server, "billing")
    sent = [billing.send("frank", f"Build {i}", category="deploys", link=f"https://ci.example.com/builds/{i}") for i in range(25)]
    page = pages.page()
    page.goto(server.url + "/")
    page.fill("#signin-username", "frank")
    page.fill("#signin-password", "wrong-password")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_have_text("Wrong username or password.")
    sign_in(page, server, "frank")

    assert listed_ids(page) == [n["id"] for n in reversed(sent)][:20]
    newest = item(page, sent[-1]["id"])
    expect(newest.locator(".chip")).to_have_text("deploys")
    expect(newest.locator("time")).to_have_text("just now")
    expect(newest.locator("a.link")).to_have_attribute("href", "https://ci.example.com/builds/24")
    expect(badge(page)).to_have_text("25")

    page.click("#load-older")
    expect(items(page)).to_have_count(25)
    expect(page.locator("#load-older")).to_be_hidden()
    assert listed_ids(page) == [n["id"] for n in reversed(sent)]


def test_only_a_service_account_sees_the_send_form_and_it_sends_through_the_api(inbox_server, make_user, pages):
    server = inbox_server()
    make_user("billing", can_send=True)
    make_user("gina")
    gina = sign_in(pages.page(), server, "gina")
    expect(gina.locator("#send")).to_be_hidden()
    sender = sign_in(pages.page(), server, "billing")
    expect(sender.locator("#send")).to_be_visible()

    sender.click("#send summary")
    sender.fill("#send-recipient", "gina")
    sender.fill("#send-title", "Hello from the form")
    sender.fill("#send-category", "tests")
    sender.click("#send-form button[type=submit]")
    expect(sender.locator("#send-result")).to_have_text(re.compile(r"Sent #\d+ to gina\."))
    expect(gina.locator("#list .notification", has_text="Hello from the form")).to_be_visible(timeout=2000)

    sender.fill("#send-recipient", "nobody-by-this-name")
    sender.fill("#send-title", "Lost")
    sender.click("#send-form button[type=submit]")
    expect(sender.locator("#send-result")).to_have_text(re.compile(r"Unknown or inactive recipient"))


SHOWCASE = [
    ("security", "New sign-in from Firefox on Linux", "If this was not you, change your password.", "https://example.com/security"),
    ("billing", "Invoice INV-2041 paid", "€120.00 received from ACME GmbH. Thank you!", "https://example.com/invoices/2041"),
    ("deploys", "Deploy of api v2.14 finished", "All 12 checks passed in 3 min 41 s.", "https://ci.example.com/builds/881"),
    ("comments", "Dana replied to your comment", "“Looks good to me — shipping it after lunch.”", "https://example.com/threads/17#c4"),
    ("general", "Welcome to your inbox", "Notifications arrive here live; click one to mark it read.", ""),
]


AGES = [timedelta(days=2, hours=3), timedelta(days=1, hours=1), timedelta(hours=3), timedelta(minutes=47), timedelta(minutes=12)]


def test_screenshots_of_the_inbox_are_saved_wide_and_narrow(inbox_server, make_user, pages, api, artifacts):
    server = inbox_server()
    make_user("billing-service", can_send=True)
    make_user("maria")
    sender = api(server, "billing-service")
    sent = [sender.send("maria", title, message=message, category=category, link=link) for category, title, message, link in reversed(SHOWCASE)]
    maria = api(server, "maria")
    for n in sent[:2]:  # the two oldest are read
        maria.post(f"/api/notifications/{n['id']}/read/")
    # Spread them over the last days, so the picture shows how times read.
    now = timezone.now()
    for n, age in zip(sent, AGES):
        Notification.objects.filter(pk=n["id"]).update(created_at=now - age)

    wide = sign_in(pages.page(), server, "maria")
    latest = sender.send("maria", "Build #882 failed", message="tests/test_api.py::test_send timed out.", category="deploys", link="https://ci.example.com/builds/882")
    expect(item(wide, latest["id"])).to_be_visible(timeout=2000)
    expect(wide.locator(".toast")).to_be_visible()
    expect(badge(wide)).to_have_text("4")
    expect(wide.locator("#list .notification.unread")).to_have_count(4)
    wide.mouse.move(0, 0)
    wide.wait_for_timeout(1700)  # let the arrival highlight fade
    wide.screenshot(path=str(artifacts / "inbox-wide.png"))

    narrow = pages.page(pages.context(viewport={"width": 380, "height": 800}))
    narrow.goto(server.url + "/")
    expect(narrow.locator("#signin")).to_be_visible()
    narrow.screenshot(path=str(artifacts / "inbox-signin-narrow.png"))
    sign_in(narrow, server, "maria")
    expect(items(narrow)).to_have_count(6)
    expect(item(narrow, sent[-1]["id"]).locator("time")).to_have_text("12 min ago")
    narrow.mouse.move(0, 0)
    narrow.screenshot(path=str(artifacts / "inbox-narrow.png"))
    assert narrow.evaluate("document.documentElement.scrollWidth") <= 380  # nothing overflows sideways

    service = sign_in(pages.page(pages.context(viewport={"width": 1000, "height": 760})), server, "billing-service")
    service.click("#send summary")
    service.screenshot(path=str(artifacts / "inbox-send-form.png"))
    for name in ("inbox-wide.png", "inbox-narrow.png", "inbox-signin-narrow.png", "inbox-send-form.png"):
        assert (artifacts / name).stat().st_size > 10_000
