"""The operators' admin: changelist, filters, search, date hierarchy, actions (with their pushes), access."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inbox.models import IdempotencyKey, Notification, Tombstone
from tests.factories import make_notification, make_notifications, make_users

CHANGELIST = "/admin/inbox/notification/"


@pytest.fixture
def admin_client_(client, staff_user):
    client.force_login(staff_user)
    return client


def step(n: Notification) -> int:
    """The row's step in its recipient's change journal now (inbox/store/journal.py)."""
    return Notification.objects.get(pk=n.pk).seq


def buried(n: Notification) -> int:
    """The step of the deleted row's tombstone."""
    return Tombstone.objects.get(notification_id=n.pk).seq


def listed(response) -> list[int]:
    assert response.status_code == 200
    return [n.pk for n in response.context["cl"].result_list]


def test_the_changelist_lists_notifications_newest_first(admin_client_, alice, bob):
    a = make_notification(alice, title="Invoice paid")
    b = make_notification(bob, title="Welcome")
    response = admin_client_.get(CHANGELIST)
    assert listed(response) == [b.id, a.id]
    html = response.content.decode()
    assert "Invoice paid" in html and "Welcome" in html


@pytest.mark.parametrize("state", ["pending", "delivered", "read"])
def test_the_state_filter(admin_client_, alice, state):
    now = timezone.now()
    pending = make_notification(alice)
    delivered = make_notification(alice, delivered_at=now)
    read = make_notification(alice, delivered_at=now, read_at=now)
    read_without_ack = make_notification(alice, read_at=now)  # read from another client: read all the same
    expected = {"pending": [pending.id], "delivered": [delivered.id], "read": [read_without_ack.id, read.id]}[state]
    assert listed(admin_client_.get(f"{CHANGELIST}?state={state}")) == expected


def test_the_category_filter(admin_client_, alice):
    billing = make_notification(alice, category="billing")
    make_notification(alice, category="social")
    response = admin_client_.get(f"{CHANGELIST}?category=billing")
    assert listed(response) == [billing.id]
    assert "social" in response.content.decode()  # offered as a filter choice


def test_the_created_at_filter(admin_client_, alice):
    old = make_notification(alice, created_at=timezone.now() - timedelta(days=30))
    recent = make_notification(alice)
    cl = admin_client_.get(CHANGELIST).context["cl"]
    (spec,) = [s for s in cl.filter_specs if getattr(s, "field_path", None) == "created_at"]
    links = {str(c["display"]): c["query_string"] for c in spec.choices(cl)}
    assert listed(admin_client_.get(CHANGELIST + links["Past 7 days"])) == [recent.id]
    assert listed(admin_client_.get(CHANGELIST + links["Today"])) == [recent.id]
    assert listed(admin_client_.get(CHANGELIST + links["Any date"])) == [recent.id, old.id]


def test_the_date_hierarchy(admin_client_, alice):
    jan = make_notification(alice, created_at=datetime(2024, 1, 15, 12, tzinfo=dt_timezone.utc))
    make_notification(alice, created_at=datetime(2024, 3, 2, 12, tzinfo=dt_timezone.utc))
    make_notification(alice, created_at=datetime(2023, 1, 20, 12, tzinfo=dt_timezone.utc))
    top = admin_client_.get(CHANGELIST)
    assert "created_at__year=2024" in top.content.decode()
    assert len(listed(admin_client_.get(f"{CHANGELIST}?created_at__year=2024"))) == 2
    assert listed(admin_client_.get(f"{CHANGELIST}?created_at__year=2024&created_at__month=1")) == [jan.id]
    assert listed(admin_client_.get(f"{CHANGELIST}?created_at__year=2024&created_at__month=1&created_at__day=15")) == [jan.id]


def test_search_by_recipient_username(admin_client_, alice, bob):
    mine = make_notification(alice, title="Hello")
    make_notification(bob, title="Hello")
    assert listed(admin_client_.get(f"{CHANGELIST}?q=alice")) == [mine.id]
    assert listed(admin_client_.get(f"{CHANGELIST}?q=ALI")) == [mine.id]


def test_search_by_title(admin_client_, alice, bob):
    invoice = make_notification(bob, title="Your invoice is ready")
    make_notification(alice, title="Welcome")
    assert listed(admin_client_.get(f"{CHANGELIST}?q=invoice")) == [invoice.id]


@pytest.mark.parametrize("q", ["%25", "_", "'; DROP TABLE inbox_notification; --", "%E2%80%AE", "a" * 3000])
def test_odd_search_terms_never_break_the_changelist(admin_client_, alice, q):
    make_notification(alice, title="Hello")
    response = admin_client_.get(f"{CHANGELIST}?q={q}")
    assert response.status_code == 200
    assert Notification.objects.count() == 1


def test_filters_and_search_combine(admin_client_, alice, bob):
    target = make_notification(alice, category="billing", title="Invoice")
    make_notification(alice, category="social", title="Invoice")
    make_notification(bob, category="billing", title="Invoice")
    assert listed(admin_client_.get(f"{CHANGELIST}?q=alice&category=billing&state=pending")) == [target.id]


def _changelist_queries(client) -> CaptureQueriesContext:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST)
    assert response.status_code == 200
    return queries


def test_the_changelist_query_count_does_not_grow_with_the_rows_on_the_page(admin_client_, service_account):
    users = make_users(50, prefix="row")
    for u in users[:3]:
        make_notification(u, sender=service_account)
    few = _changelist_queries(admin_client_)
    for u in users[3:]:
        make_notification(u, sender=service_account)
    many = _changelist_queries(admin_client_)
    assert len(admin_client_.get(CHANGELIST).context["cl"].result_list) == 50
    assert len(many) == len(few), "\n".join(q["sql"][:160] for q in many.captured_queries)


def test_the_changelist_never_runs_an_unbounded_count(admin_client_, alice):
    make_notifications(alice, 60)
    for url in (CHANGELIST, f"{CHANGELIST}?q=alice", f"{CHANGELIST}?state=pending&category=general", f"{CHANGELIST}?p=1"):
        with CaptureQueriesContext(connection) as queries:
            assert admin_client_.get(url).status_code == 200
        counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and "inbox_notification" in q["sql"]]
        assert counts, "the paginator counts the rows"
        for sql in counts:
            assert "LIMIT" in sql.upper(), sql


def test_the_paginator_stops_counting_at_its_limit(admin_client_, alice, monkeypatch):
    from inbox.admin import BoundedCountPaginator

    monkeypatch.setattr(BoundedCountPaginator, "COUNT_LIMIT", 60)
    make_notifications(alice, 120)
    cl = admin_client_.get(CHANGELIST).context["cl"]
    assert cl.result_count == 61
    assert cl.full_result_count is None
    assert len(cl.result_list) == 50


def _act(client, action: str, ids: list[int]):
    return client.post(CHANGELIST, {"action": action, "_selected_action": [str(i) for i in ids], "index": "0"})


def test_the_mark_read_action_marks_and_pushes_one_event_per_user(admin_client_, alice, bob, pushed, django_capture_on_commit_callbacks):
    a1, a2 = make_notification(alice), make_notification(alice)
    b1 = make_notification(bob)
    untouched = make_notification(bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = _act(admin_client_, "mark_read", [a1.id, a2.id, b1.id])
    assert response.status_code == 302
    assert set(Notification.objects.filter(read_at__isnull=False).values_list("id", flat=True)) == {a1.id, a2.id, b1.id}
    assert sorted(pushed, key=lambda e: e[0]) == sorted(
        [
            (alice.pk, {"type": "notification.read", "ids": [a1.id, a2.id], "read": True, "unread": 0, "seq": step(a1)}),
            (bob.pk, {"type": "notification.read", "ids": [b1.id], "read": True, "unread": 1, "seq": step(b1)}),
        ],
        key=lambda e: e[0],
    )
    untouched.refresh_from_db()
    assert untouched.read_at is None


def test_the_mark_unread_action(admin_client_, alice, pushed, django_capture_on_commit_callbacks):
    read = make_notification(alice, read_at=timezone.now())
    already_unread = make_notification(alice)
    with django_capture_on_commit_callbacks(execute=True):
        _act(admin_client_, "mark_unread", [read.id, already_unread.id])
    read.refresh_from_db()
    assert read.read_at is None
    assert pushed == [(alice.pk, {"type": "notification.read", "ids": [read.id], "read": False, "unread": 2, "seq": step(read)})]


def test_the_resend_action_pushes_each_unexpired_notification_again(admin_client_, alice, bob, pushed, django_capture_on_commit_callbacks):
    a = make_notification(alice)
    b = make_notification(bob)
    expired = make_notification(bob, expires_at=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        response = _act(admin_client_, "resend", [a.id, b.id, expired.id])
    assert response.status_code == 302
    assert len(pushed) == 2
    assert sorted((uid, m["notification"]["id"]) for uid, m in pushed) == sorted([(alice.pk, a.id), (bob.pk, b.id)])
    assert {m["type"] for _, m in pushed} == {"notification.created"}
    assert all(m["resend"] is True for _, m in pushed.messages)  # delivered even where a catch-up sent it
    assert Notification.objects.count() == 3


def admin_form(recipient, **fields) -> dict:
    """The admin's notification form, filled in: empty optional fields plus ``fields``."""
    # "initial-data": the hidden initial value a browser posts for a field with a callable default.
    form = {"recipient": str(recipient.pk), "sender": "", "message": "", "data": "{}", "initial-data": "{}", "link": ""}
    form.update({f"{name}_{part}": "" for name in ("read_at", "expires_at") for part in (0, 1)})
    return {**form, **fields}


def test_adding_a_notification_in_the_admin_pushes_it(admin_client_, alice, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(
            f"{CHANGELIST}add/",
            admin_form(alice, category="ops", title="Planned maintenance", message="Tonight"),
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    n = Notification.objects.get()
    assert (n.recipient_id, n.title, n.category) == (alice.pk, "Planned maintenance", "ops")
    assert len(pushed) == 1
    assert pushed[0][0] == alice.pk
    assert pushed[0][1]["notification"]["id"] == n.id


def test_editing_a_title_in_the_admin_shows_the_new_version_in_place_on_open_pages(admin_client_, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice, title="Before", link="/orders/5")
    make_notification(alice)  # unread too: the frame carries the count as it is, not one more
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(
            f"{CHANGELIST}{n.id}/change/",
            admin_form(alice, category="general", title="After", link="/orders/5"),
        )
    assert response.status_code == 302
    n.refresh_from_db()
    assert n.title == "After"
    assert n.link == "/orders/5"  # the form showed the stored link and kept it
    [(user_id, frame)] = pushed
    assert user_id == alice.pk
    assert frame["type"] == "notification.updated"
    assert frame["notification"]["id"] == n.id and frame["notification"]["title"] == "After"
    assert frame["unread"] == 2


@pytest.mark.parametrize(
    "field,value",
    [("message", "New text"), ("link", "https://example.com/new"), ("category", "ops"), ("data", '{"order": 5}')],
)
def test_every_edit_of_what_the_recipient_sees_is_pushed_as_an_update(admin_client_, alice, pushed, django_capture_on_commit_callbacks, field, value):
    n = make_notification(alice, title="Same")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(f"{CHANGELIST}{n.id}/change/", admin_form(alice, **{"category": "general", "title": "Same", field: value}))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert [frame["type"] for _, frame in pushed] == ["notification.updated"]
    shown = pushed[0][1]["notification"][field]
    assert shown == ({"order": 5} if field == "data" else value)


def test_saving_an_unchanged_notification_pushes_nothing(admin_client_, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice, title="Same", category="general")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(f"{CHANGELIST}{n.id}/change/", admin_form(alice, category="general", title="Same"))
    assert response.status_code == 302
    assert pushed == []


@pytest.mark.parametrize("link", ["/orders/5", "https://example.com/orders/5", ""])
def test_the_admin_form_takes_a_path_of_the_site_or_an_http_url(admin_client_, alice, link):
    response = admin_client_.post(f"{CHANGELIST}add/", admin_form(alice, category="general", title="Shipped", link=link))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Notification.objects.get().link == link


@pytest.mark.parametrize("link", ["//evil.example", "javascript:alert(1)", "/\\evil.example", "/a\x01b", "orders/5"])
def test_the_admin_form_refuses_other_hosts_scripts_and_ambiguous_links(admin_client_, alice, pushed, link):
    response = admin_client_.post(f"{CHANGELIST}add/", admin_form(alice, category="general", title="Shipped", link=link))
    assert response.status_code == 200
    assert "link" in response.context["adminform"].form.errors
    assert not Notification.objects.exists()
    assert pushed == []


def test_the_change_form_shows_the_stored_link(admin_client_, alice):
    n = make_notification(alice, link="/orders/5")
    form = admin_client_.get(f"{CHANGELIST}{n.id}/change/").context["adminform"].form
    assert form.initial["link"] == "/orders/5"
    assert 'value="/orders/5"' in str(form["link"])


# --- How the admin names a notification, and the changelist's columns --------------------------


def test_a_notification_is_named_by_its_recipients_username(alice):
    n = make_notification(alice, title="Invoice paid")
    assert str(n) == f"#{n.id} to alice: Invoice paid"


def test_a_long_title_is_cut_short_in_the_name(alice):
    n = make_notification(alice, title="x" * 200)
    assert str(n) == f"#{n.id} to alice: {'x' * 59}…"


def test_an_unsaved_notification_without_a_recipient_has_a_name_too():
    assert str(Notification(title="Draft")) == "#None to None: Draft"


def test_the_changelist_shows_usernames_and_cuts_long_titles(admin_client_, alice):
    long_title = ("Your quarterly report " + "is ready " * 20)[:200].strip()
    make_notification(alice, title=long_title)
    response = admin_client_.get(CHANGELIST)
    html = response.content.decode()
    assert ">alice<" in html
    assert long_title not in html
    assert long_title[:60] in html


def test_the_changelist_runs_a_fixed_handful_of_queries_whatever_the_rows(admin_client_, service_account, django_assert_max_num_queries):
    for u in make_users(50, prefix="page"):
        make_notification(u, sender=service_account, title="t" * 200)
    # session, user, the bounded count, the page (recipient joined), the category filter, the date hierarchy...
    with django_assert_max_num_queries(10):
        response = admin_client_.get(CHANGELIST)
    assert len(response.context["cl"].result_list) == 50
    assert all(f">{u}<" in response.content.decode() for u in ("page-00000", "page-00049"))


def test_the_change_form_opens(admin_client_, alice):
    n = make_notification(alice)
    assert admin_client_.get(f"{CHANGELIST}{n.id}/change/").status_code == 200
    assert admin_client_.get(f"{CHANGELIST}add/").status_code == 200


def test_the_idempotency_key_changelist_opens(admin_client_, service_account):
    IdempotencyKey.objects.create(sender=service_account, key="k-1", request_hash="0" * 64)
    response = admin_client_.get("/admin/inbox/idempotencykey/?q=k-1")
    assert response.status_code == 200
    assert "k-1" in response.content.decode()


def test_a_non_staff_user_is_sent_to_the_login_page(client, alice):
    n = make_notification(alice)
    client.force_login(alice)
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert client.get(f"{CHANGELIST}{n.id}/change/").status_code == 302


def test_a_non_staff_user_cannot_run_an_action(client, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = _act(client, "mark_read", [n.id])
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    n.refresh_from_db()
    assert n.read_at is None
    assert pushed == []


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, db):
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_staff_user_without_permissions_is_refused(client, make_user, alice):
    make_notification(alice)
    client.force_login(make_user("intern", is_staff=True))
    assert client.get(CHANGELIST).status_code == 403



def test_deleting_in_the_admin_tells_each_recipients_open_clients_once(admin_client_, alice, bob, pushed, django_capture_on_commit_callbacks):
    a1, a2, b1 = make_notification(alice), make_notification(alice), make_notification(bob)
    kept = make_notification(bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(
            CHANGELIST, {"action": "delete_selected", "_selected_action": [a1.id, a2.id, b1.id], "post": "yes"}
        )
    assert response.status_code == 302
    assert list(Notification.objects.values_list("id", flat=True)) == [kept.id]
    assert sorted(pushed, key=lambda e: e[0]) == [
        (alice.pk, {"type": "notification.deleted", "ids": sorted([a1.id, a2.id]), "unread": 0, "seq": buried(a1), "reason": "deleted"}),
        (bob.pk, {"type": "notification.deleted", "ids": [b1.id], "unread": 1, "seq": buried(b1), "reason": "deleted"}),
    ]


def test_deleting_one_notification_from_its_admin_page_pushes_one_event(admin_client_, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(f"{CHANGELIST}{n.id}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Notification.objects.filter(pk=n.id).exists()
    assert pushed == [(alice.pk, {"type": "notification.deleted", "ids": [n.id], "unread": 0, "seq": buried(n), "reason": "deleted"})]


# --- Bad input is a 4xx, never a 500 (PostgreSQL refuses NUL in text) --------------------------

NUL_QUERIES = [
    f"{CHANGELIST}?category=%00",
    f"{CHANGELIST}?category=bil%00ling",
    f"{CHANGELIST}?q=%00",
    f"{CHANGELIST}?q=a%00b",
    f"{CHANGELIST}?state=%00",
    f"{CHANGELIST}?created_at__gte=%00",
    f"{CHANGELIST}?o=%00",
    f"{CHANGELIST}?p=%00",
    f"{CHANGELIST}?_changelist_filters=category%3D%00",
    "/admin/inbox/idempotencykey/?q=%00",
    "/admin/auth/user/?q=%00",
    "/admin/auth/group/?q=%00",
    "/admin/autocomplete/?term=%00&app_label=auth&model_name=user&field_name=groups",
    "/admin/login/?next=%00",
]


@pytest.mark.parametrize("url", NUL_QUERIES)
def test_a_nul_in_an_admin_filter_or_search_is_a_400(client, staff_user, alice, url):
    make_notification(alice, category="billing")
    client.force_login(staff_user)
    client.raise_request_exception = False
    response = client.get(url)
    assert response.status_code == 400, (url, response.status_code)
    assert b"NUL" in response.content


@pytest.mark.parametrize(
    "path,action",
    [(CHANGELIST, "mark_read"), (CHANGELIST, "delete_selected"), ("/admin/inbox/idempotencykey/", "delete_selected"),
     ("/admin/auth/user/", "delete_selected"), ("/admin/auth/group/", "delete_selected")],
)
@pytest.mark.parametrize("selected", ["abc", "\x00", "1.5", "-1", "99999999999999999999999", "\uff11"])
def test_an_action_on_ids_that_are_not_integers_is_a_400_and_changes_nothing(client, staff_user, alice, pushed, path, action, selected):
    n = make_notification(alice)
    client.force_login(staff_user)
    client.raise_request_exception = False
    response = client.post(path, {"action": action, "_selected_action": [str(n.id), selected], "index": "0", "post": "yes"})
    assert response.status_code == 400, response.status_code
    n.refresh_from_db()
    assert n.read_at is None and Notification.objects.count() == 1
    assert pushed == []


def test_odd_values_in_the_admin_forms_are_form_errors(admin_client_, alice):
    response = admin_client_.post(f"{CHANGELIST}add/", {"recipient": "\x00", "title": "t\x00", "category": "c\x00"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Notification.objects.count() == 0
