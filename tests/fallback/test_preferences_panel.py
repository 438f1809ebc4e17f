"""
The preferences panel of the inbox page (inbox/static/inbox/inbox-preferences.js) in headless
Chromium against a real daphne: what the panel changes is what GET /api/preferences/ answers, and
a category muted in-app is listed and marked but not toasted.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import api, artifacts, browser, inbox_server, pages  # noqa: F401 (the browser tests' fixtures)
from tests.browser.support import expect, sign_in

from .test_web_push import VAPID_KEY

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def open_panel(page):
    page.click("#prefs summary")
    expect(page.locator("#prefs-categories")).to_be_visible()


def box(page, category, channel):
    return page.locator(f'#prefs-categories input[data-category="{category}"][data-channel="{channel}"]')


def saved(page, text):
    expect(page.locator(".prefs-status")).to_have_text(text)


def test_what_the_panel_changes_is_what_the_api_answers(inbox_server, make_user, pages, api, artifacts):
    server = inbox_server()
    make_user("erin")
    page = sign_in(pages.page(), server, "erin")
    erin = api(server, "erin")
    open_panel(page)
    # Critical categories are shown, always on, and cannot be changed here.
    for channel in ("in_app", "web_push", "email"):
        expect(box(page, "security", channel)).to_be_checked()
        expect(box(page, "security", channel)).to_be_disabled()

    page.fill("#prefs-add-category", "marketing")
    page.click(".prefs-add button")
    box(page, "marketing", "email").uncheck()
    saved(page, "marketing: email off.")
    assert erin.get("/api/preferences/")["categories"]["marketing"] == {
        "in_app": True, "web_push": True, "email": False, "muted_until": None,
    }

    page.select_option('#prefs-categories select[data-category="general"]', "86400")
    saved(page, "general muted.")
    assert erin.get("/api/preferences/")["categories"]["general"]["muted_until"] is not None
    expect(page.locator('#prefs-categories select[data-category="general"] option[value="keep"]')).to_have_count(1)
    page.select_option('#prefs-categories select[data-category="general"]', "")
    saved(page, "general unmuted.")
    assert erin.get("/api/preferences/")["categories"]["general"]["muted_until"] is None

    page.select_option("#prefs-time-zone", "Asia/Tokyo")
    page.check("#prefs-quiet-on")
    page.fill("#prefs-quiet-start", "21:30")
    page.fill("#prefs-quiet-end", "06:45")
    page.click("#prefs-profile button[type=submit]")
    saved(page, "Saved.")
    stored = erin.get("/api/preferences/")
    assert stored["time_zone"] == "Asia/Tokyo" and stored["quiet_hours"] == {"start": "21:30", "end": "06:45"}

    # After a reload the panel shows what is stored.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-status", "open")
    open_panel(page)
    expect(box(page, "marketing", "email")).not_to_be_checked()
    expect(page.locator("#prefs-time-zone")).to_have_value("Asia/Tokyo")
    expect(page.locator("#prefs-quiet-start")).to_have_value("21:30")
    page.locator("#prefs").screenshot(path=str(artifacts / "preferences-panel.png"))

    # Without VAPID keys the button says Web Push is not configured.
    page.click("#push-enable")
    expect(page.locator("#push-status")).to_have_text("Web Push is not configured on this server.")


def test_a_category_muted_in_app_is_listed_and_marked_but_not_toasted_and_the_badge_counts_it(inbox_server, make_user, pages, api):
    server = inbox_server()
    make_user("billing", can_send=True)
    make_user("frank")
    page = sign_in(pages.page(), server, "frank")
    open_panel(page)
    page.fill("#prefs-add-category", "marketing")
    page.click(".prefs-add button")
    box(page, "marketing", "in_app").uncheck()
    saved(page, "marketing: in app off.")

    billing = api(server, "billing")
    quiet = billing.send("frank", "Spring sale", category="marketing")
    loud = billing.send("frank", "Invoice paid", category="billing")
    expect(page.locator(f'#list .notification[data-id="{loud["id"]}"]')).to_be_visible()
    muted = page.locator(f'#list .notification[data-id="{quiet["id"]}"]')
    expect(muted).to_be_visible()
    expect(muted).to_have_attribute("data-muted", "in-app")
    expect(muted.locator(".muted-mark")).to_have_text("muted")
    expect(page.locator(".toast", has_text="Invoice paid")).to_be_visible()
    expect(page.locator(".toast", has_text="Spring sale")).to_have_count(0)
    expect(page.locator("#badge")).to_have_text("2")  # muting hides the interruption, not the record

    # Turned back on: the mark goes at once, the next one is toasted.
    box(page, "marketing", "in_app").check()
    saved(page, "marketing: in app on.")
    expect(muted).not_to_have_attribute("data-muted", "in-app")
    billing.send("frank", "Summer sale", category="marketing")
    expect(page.locator(".toast", has_text="Summer sale")).to_be_visible()


def test_enable_push_registers_the_worker_and_reports_what_headless_chromium_refuses(inbox_server, make_user, pages, api):
    """Headless Chromium has no push service to subscribe with: the button gets as far as it allows and says why."""
    server = inbox_server(env={"INBOX_VAPID_PRIVATE_KEY": VAPID_KEY})
    make_user("gina")
    context = pages.context()
    context.grant_permissions(["notifications"], origin=server.url)
    page = sign_in(pages.page(context), server, "gina")
    open_panel(page)
    page.click("#push-enable")
    status = page.locator("#push-status")
    expect(status).not_to_have_text("…", timeout=15_000)
    expect(status).not_to_have_text("")
    scope = page.evaluate("async () => (await navigator.serviceWorker.getRegistration('/static/inbox/inbox-sw.js'))?.scope")
    assert scope == f"{server.url}/static/inbox/"
    text = status.inner_text()
    print(f"Enable push in headless Chromium: {text!r}")
    stored = api(server, "gina").get("/api/push-subscriptions/")["subscriptions"]
    assert (text == "Push is on for this browser.") == (len(stored) == 1), (text, stored)
