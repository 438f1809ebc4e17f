"""
Grouping, computed when read (issue 21, docs/feed.md "Keys, groups, states and actions"): one
entry per group with its count, unread count and latest actors; a group read at once; live frames
that say which group grew.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from inbox import services
from inbox.models import Notification
from inbox.services.groups import notification_groups_for_user
from tests.inbox.conftest import pushed  # noqa: F401 (a fixture)

SEND = "/api/notifications/"
GROUPED = "/api/notifications/?grouped=true"


def like(sender_api, actor, post=17, **body):
    r = sender_api.post(
        SEND, {"recipient": "alice", "title": f"{actor} liked your post", "group": f"post-{post}-likes", "data": {"actor": actor}, **body},
        format="json",
    )
    assert r.status_code == 201, r.content
    return r.json()["id"]


def test_the_grouped_list_has_one_entry_per_group_newest_first_with_counts_and_the_latest_actors(
    db, alice, sender_api, alice_api
):
    first = like(sender_api, "Ana")
    like(sender_api, "Ben")
    lone = sender_api.post(SEND, {"recipient": "alice", "title": "Your invoice"}, format="json").json()["id"]
    other = like(sender_api, "Dan", post=18)
    like(sender_api, "Cleo")
    newest = like(sender_api, "Ana")
    alice_api.post(f"/api/notifications/{first}/read/")
    r = alice_api.get(GROUPED)
    assert r.status_code == 200
    entries = r.json()["results"]
    assert [(e["group"], e["count"], e["unread_count"], e["actors"], e["latest"]["id"]) for e in entries] == [
        ("post-17-likes", 4, 3, ["Ana", "Cleo", "Ben"], newest),
        ("post-18-likes", 1, 1, ["Dan"], other),
        (None, 1, 1, ["billing-service"], lone),  # no data.actor: the sender's username
    ]
    assert r.json()["next"] is None
    # The plain list is untouched: a row each.
    assert len(alice_api.get(SEND).json()["results"]) == 6


def test_paging_the_grouped_list_while_groups_grow_lists_each_group_once(db, alice, sender_api, alice_api):
    for post in range(1, 6):
        like(sender_api, "Ana", post=post)
    seen, url = [], GROUPED + "&page_size=2"
    while url:
        body = alice_api.get(url).json()
        seen += [e["group"] for e in body["results"]]
        url = body["next"]
        # Between pages: post-1 (not listed yet) and post-5 (listed) grow, and a new group starts.
        like(sender_api, "Ben", post=1)
        like(sender_api, "Ben", post=5)
        like(sender_api, "Ben", post=99)
    assert seen == ["post-5-likes", "post-4-likes", "post-3-likes", "post-2-likes", "post-1-likes"]
    # A first page again sees what came since.
    assert [e["group"] for e in alice_api.get(GROUPED).json()["results"]][:3] == ["post-99-likes", "post-5-likes", "post-1-likes"]


@pytest.mark.parametrize("query", ["page_size=0", "page_size=101", "page_size=x", "before=-1", "upto=abc", "grouped=maybe"])
def test_bad_grouped_list_parameters_are_400s(db, alice, alice_api, query):
    url = f"{SEND}?{query}" if query.startswith("grouped") else f"{GROUPED}&{query}"
    assert alice_api.get(url).status_code == 400


def test_marking_a_group_read_marks_its_members_in_one_event(
    db, alice, sender_api, alice_api, pushed, django_capture_on_commit_callbacks
):
    ids = [like(sender_api, a) for a in ("Ana", "Ben", "Cleo")]
    like(sender_api, "Dan", post=18)
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        r = alice_api.post("/api/notifications/groups/post-17-likes/read/")
    assert r.status_code == 200 and r.json() == {"updated": 3, "unread": 1}
    assert [(f["type"], f["ids"], f["unread"]) for _, f in pushed] == [("notification.read", ids, 1)]
    assert alice_api.post("/api/notifications/groups/nope/read/").status_code == 404
    assert alice_api.post("/api/notifications/groups/bad%20group/read/").status_code == 400


def test_another_users_group_is_a_404(db, alice, bob, sender_api, client_for):
    like(sender_api, "Ana")
    assert client_for(bob).post("/api/notifications/groups/post-17-likes/read/").status_code == 404
    assert Notification.objects.filter(read_at__isnull=True).count() == 1


def test_a_grouped_sends_frame_says_which_group_grew_and_its_count(db, alice, sender_api, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        like(sender_api, "Ana")
        like(sender_api, "Ben")
        sender_api.post(SEND, {"recipient": "alice", "title": "plain"}, format="json")
    frames = [f for _, f in pushed]
    assert [(f["notification"]["group"], f.get("group"), f.get("group_count")) for f in frames] == [
        ("post-17-likes", "post-17-likes", 1),
        ("post-17-likes", "post-17-likes", 2),
        ("", None, None),
    ]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="threads writing at once: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_concurrent_grouped_sends_count_each_member_once(alice, bob, pushed):
    n = 10
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            start.wait()
            services.notification_create(recipients=[alice, bob], title=f"like {i}", group="post-1-likes", data={"actor": f"a{i}"})
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for user in (alice, bob):
        counts = sorted(f["group_count"] for uid, f in pushed if uid == user.pk)
        assert counts == list(range(1, n + 1))  # each send counted under the lock: no two saw the same count
    entries = notification_groups_for_user(user=alice, limit=10).entries
    assert [(e["group"], e["count"], len(e["actors"])) for e in entries] == [("post-1-likes", n, 3)]


# --- The inbox page, in a real browser against real daphne ---------------------------------------------------

from tests.browser.conftest import api, artifacts, browser, inbox_server, pages  # noqa: E402, F401 (fixtures)
from tests.browser.support import expect, sign_in  # noqa: E402


@pytest.mark.browser
@pytest.mark.e2e
def test_the_inbox_page_shows_a_group_as_one_entry_with_its_latest_actor_and_the_others_counted(inbox_server, make_user, pages, api):
    server = inbox_server()
    make_user("social", can_send=True)
    make_user("dana")
    page = sign_in(pages.page(), server, "dana")
    social = api(server, "social")
    sent = [social.send("dana", f"{who} liked your post", group="post-17-likes", data={"actor": who}) for who in ("Ana", "Ben", "Cleo")]
    newest = page.locator(f'#list .notification[data-id="{sent[-1]["id"]}"]')
    expect(newest).to_be_visible(timeout=3000)
    expect(newest.locator(".group-summary")).to_have_text("Cleo and 2 others", timeout=3000)
    for older in sent[:-1]:
        expect(page.locator(f'#list .notification[data-id="{older["id"]}"]')).to_be_hidden()
    # A notification outside the group is an entry of its own.
    lone = social.send("dana", "Your export is ready")
    expect(page.locator(f'#list .notification[data-id="{lone["id"]}"]')).to_be_visible(timeout=3000)
    expect(page.locator("#list .notification:visible")).to_have_count(2)
