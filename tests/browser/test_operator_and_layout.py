"""
What a new user found on the page and in the admin, in a real browser (headless Chromium) against
real daphne: a long title's toast stays in the window, the send form's patterns are valid regular
expressions (Chromium compiles them with the v flag), an operator's *Resend* is shown again and an
operator's edit is shown in place, and a link may be a path of the site but never a script.
"""

from __future__ import annotations

import re

import pytest

from inbox.models import Notification
from tests.browser.test_inbox_client import page as client_page  # noqa: F401 (the scripted-socket page)

from .support import PASSWORD, expect, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LONG_WORD = "Supercalifragilistic" * 10  # 200 characters without a space
LONG_TITLE = " ".join(["Your quarterly usage report for the workspace is ready to download"] * 3)[:200]


def item(page, notification_id):
    return page.locator(f'#list .notification[data-id="{notification_id}"]')


def toast(page, notification_id):
    return page.locator(f'.toast[data-id="{notification_id}"]')


def admin_sign_in(page, server, username: str):
    page.goto(server.url + "/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_be_visible()
    return page


@pytest.mark.parametrize("title", [LONG_WORD, LONG_TITLE], ids=["one-long-word", "a-long-sentence"])
def test_a_long_titles_toast_stays_inside_a_1200_px_window(inbox_server, make_user, pages, api, title):
    server = inbox_server()
    make_user("billing", can_send=True)
    make_user("hana")
    page = sign_in(pages.page(pages.context(viewport={"width": 1200, "height": 800})), server, "hana")
    sent = api(server, "billing").send("hana", title, message=LONG_WORD)
    expect(toast(page, sent["id"])).to_be_visible(timeout=2000)
    box = toast(page, sent["id"]).bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1200, box
    assert box["width"] <= 340, box  # the toast column's width
    assert page.evaluate("document.documentElement.scrollWidth") <= 1200  # nothing scrolls sideways either
    item_box = item(page, sent["id"]).bounding_box()
    assert item_box["x"] + item_box["width"] <= 1200, item_box


def test_every_pattern_of_the_page_is_a_valid_v_flag_regular_expression_and_the_category_one_works(inbox_server, make_user, pages):
    server = inbox_server()
    make_user("billing", can_send=True)
    make_user("ivan")
    page = pages.page()
    console = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    sign_in(page, server, "billing")
    page.click("#send summary")

    # What Chromium does with a pattern attribute: new RegExp(`^(?:${pattern})$`, "v").
    invalid = page.evaluate(
        """() => [...document.querySelectorAll("[pattern]")].flatMap((e) => {
            try { new RegExp(`^(?:${e.getAttribute("pattern")})$`, "v"); return []; }
            catch (err) { return [`${e.name}: ${err.message}`]; }
        })"""
    )
    assert invalid == []
    assert page.locator("[pattern]").count() >= 2  # the category and the link

    category = page.locator("#send-category")
    for value, valid in [("build-status", True), ("build_status-2", True), ("a b", False), ("a/b", False)]:
        category.fill(value)
        assert category.evaluate("e => e.checkValidity()") is valid, value
    link = page.locator("#send-link")
    for value, valid in [
        ("/orders/5", True), ("https://example.com/x", True), ("//evil.example", False),
        ("/\\\\evil.example", False), ("javascript:alert(1)", False), ("orders/5", False),
    ]:
        link.fill(value)
        assert link.evaluate("e => e.checkValidity()") is valid, value

    # "a b" is refused by the form itself: nothing is sent.
    page.fill("#send-recipient", "ivan")
    page.fill("#send-title", "Refused by the form")
    category.fill("a b")
    link.fill("")
    page.click("#send-form button[type=submit]")
    assert category.evaluate("e => e.validity.patternMismatch") is True
    expect(page.locator("#send-result")).to_have_text("")
    # "build-status" and a relative link are sent.
    category.fill("build-status")
    link.fill("/builds/881")
    page.click("#send-form button[type=submit]")
    expect(page.locator("#send-result")).to_have_text(re.compile(r"Sent #\d+ to ivan\."))
    assert list(Notification.objects.values_list("title", "category", "link")) == [("Refused by the form", "build-status", "/builds/881")]
    assert not [line for line in console if "pattern" in line.lower()], console


def test_an_operators_resend_is_shown_again_on_an_open_page(inbox_server, make_user, pages, api):
    server = inbox_server()
    make_user("billing", can_send=True)
    make_user("operator", is_staff=True, is_superuser=True)
    make_user("jana")
    jana = sign_in(pages.page(), server, "jana")
    sent = api(server, "billing").send("jana", "Your invoice is overdue")
    expect(toast(jana, sent["id"])).to_be_visible(timeout=2000)
    toast(jana, sent["id"]).click()  # dismissed
    expect(toast(jana, sent["id"])).to_have_count(0)
    expect(jana.locator("#badge")).to_have_text("1")

    admin = admin_sign_in(pages.page(), server, "operator")
    admin.goto(server.url + "/admin/inbox/notification/")
    admin.check(f'input[name=_selected_action][value="{sent["id"]}"]')
    admin.select_option("select[name=action]", "resend")
    admin.click("button[name=index]")
    expect(admin.locator(".messagelist")).to_contain_text("1 notification(s) pushed again")

    expect(toast(jana, sent["id"])).to_be_visible(timeout=2000)
    expect(toast(jana, sent["id"])).to_contain_text("Your invoice is overdue")
    expect(jana.locator("#list .notification")).to_have_count(1)  # shown again, not listed twice
    expect(jana.locator("#badge")).to_have_text("1")


def test_an_operators_edit_is_applied_in_place_on_an_open_page_without_counting_it_again(inbox_server, make_user, pages, api):
    server = inbox_server()
    make_user("billing", can_send=True)
    make_user("operator", is_staff=True, is_superuser=True)
    make_user("karl")
    karl = sign_in(pages.page(), server, "karl")
    # Signed in first: the edit must land while the new notification's toast (5 s) still shows.
    admin = admin_sign_in(pages.page(), server, "operator")
    billing = api(server, "billing")
    older = billing.send("karl", "Older one")
    sent = billing.send("karl", "Deploy of api v2.14 failed", message="3 checks failed")
    expect(item(karl, sent["id"])).to_be_visible(timeout=2000)
    expect(karl.locator("#badge")).to_have_text("2")

    admin.goto(f"{server.url}/admin/inbox/notification/{sent['id']}/change/")
    admin.fill("#id_title", "Deploy of api v2.14 finished")
    admin.fill("#id_message", "All checks passed on the second run")
    admin.fill("#id_link", "/builds/881")
    admin.click("input[name=_save]")
    expect(admin.locator(".messagelist")).to_contain_text("was changed successfully")
    expect(admin.locator(".messagelist")).to_contain_text("to karl")  # named by the username

    edited = item(karl, sent["id"])
    expect(edited.locator(".title")).to_have_text("Deploy of api v2.14 finished", timeout=2000)
    expect(edited.locator(".message")).to_have_text("All checks passed on the second run")
    expect(edited.locator("a.link")).to_have_attribute("href", f"{server.url}/builds/881")
    expect(toast(karl, sent["id"])).to_contain_text("Deploy of api v2.14 finished")  # the toast still showing, updated
    expect(karl.locator("#list .notification")).to_have_count(2)
    expect(karl.locator("#badge")).to_have_text("2")
    assert [int(i) for i in karl.eval_on_selector_all("#list .notification", "els => els.map(e => e.dataset.id)")] == [sent["id"], older["id"]]


def test_a_relative_link_opens_on_the_pages_site_and_a_script_link_is_never_a_link(inbox_server, make_user, pages, api):
    server = inbox_server()
    make_user("billing", can_send=True)
    lena = make_user("lena")
    page = sign_in(pages.page(), server, "lena")
    relative = api(server, "billing").send("lena", "Your order shipped", link="/orders/5")
    expect(item(page, relative["id"]).locator("a.link")).to_have_attribute("href", f"{server.url}/orders/5", timeout=2000)
    # Rows written around the API's check (older data, other code): the page still refuses them.
    for bad in ("javascript:alert(1)", "//evil.example/x", "/\\evil.example", "data:text/html,x"):
        Notification.objects.create(recipient=lena, title=f"Bad {bad}", link=bad)
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-status", "open")
    expect(page.locator("#list .notification")).to_have_count(5)
    hrefs = page.eval_on_selector_all("#list a.link", "els => els.map(e => e.getAttribute('href'))")
    assert hrefs == [f"{server.url}/orders/5"]


def test_the_client_shows_a_resend_again_and_emits_an_update_without_counting_it(client_page):  # noqa: F811
    result = client_page.evaluate(
        """async () => {
        const client = makeClient({ token: "tok", after: 0 });
        client.on("updated", (detail) => client.log.push(["updated", detail]));
        client.connect();
        await until(() => sockets.length === 1);
        const s = sockets[0];
        s.frame({ type: "sync.done", last_id: 0, unread: 0, more: false });
        s.frame({ type: "notification.created", notification: note(4), unread: 1 });
        s.frame({ type: "notification.created", notification: note(4), unread: 1 });                 // a duplicate
        s.frame({ type: "notification.created", notification: note(4), unread: 1, resend: true });   // an operator's resend
        s.frame({ type: "notification.updated", notification: { ...note(4), title: "edited" }, unread: 1 });
        return {
          shown: client.log.filter(([t]) => t === "notification").map(([, d]) => [d.notification.id, d.resend]),
          updated: client.log.filter(([t]) => t === "updated").map(([, d]) => [d.notification.title, d.unread]),
          unread: client.log.filter(([t]) => t === "unread").map(([, d]) => d.unread),
        };
    }"""
    )
    assert result["shown"] == [[4, False], [4, True]]
    assert result["updated"] == [["edited", 1]]
    assert result["unread"] == [0, 1]  # counted once
