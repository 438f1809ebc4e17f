"""E-mail against a real SMTP server (aiosmtpd on loopback): batched, cancelled by a read, unsubscribed, retried."""

from __future__ import annotations

import re

import pytest

from inbox import services
from inbox.models import CategoryPreference, FallbackDelivery

from .support import outcomes, run_due, scheduled, send, time_passes

pytestmark = pytest.mark.django_db


@pytest.fixture
def dana(make_user):
    user = make_user("dana")
    user.email = "dana@example.com"
    user.save()
    return user


def parts(message) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def test_three_unread_notifications_arrive_as_one_message_with_text_html_and_one_click_unsubscribe(dana, smtp_server):
    send([dana], title="Invoice #1 paid", category="billing", link="https://app.example.com/invoices/1")
    send([dana], title="Invoice #2 paid", category="billing")
    send([dana], title="Tom & Jerry commented", category="comments", message="<b>nice</b>")
    time_passes(900)
    run_due()
    assert len(smtp_server.messages) == 1
    message = smtp_server.messages[0]
    assert smtp_server.envelopes[0].rcpt_tos == ["dana@example.com"]
    assert message["Subject"] == "3 unread notifications"
    text, html = parts(message)
    assert "Invoice #1 paid" in text and "Invoice #2 paid" in text and "Tom & Jerry commented" in text
    assert "https://app.example.com/invoices/1" in text
    assert "Tom &amp; Jerry commented" in html and "&lt;b&gt;nice&lt;/b&gt;" in html  # escaped in HTML
    assert re.fullmatch(r"<http://inbox\.example\.com/email/unsubscribe/[^/>]+/>", message["List-Unsubscribe"].strip())
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert FallbackDelivery.objects.filter(channel="email", status="sent").count() == 3


def test_notifications_read_before_their_time_send_no_email(dana, smtp_server):
    sent = [send([dana], title=f"Update {i}")[0] for i in range(3)]
    services.notification_mark_read(user=dana, ids=[n.pk for n in sent])
    time_passes(900)
    assert set(outcomes(run_due(), "email_fallback")) == {"read"}
    assert smtp_server.messages == []


def test_the_one_click_unsubscribe_link_turns_that_categorys_email_off_for_that_person(dana, smtp_server, client):
    send([dana], title="50% off", category="marketing")
    time_passes(900)
    run_due()
    url = smtp_server.messages[0]["List-Unsubscribe"].strip().strip("<>").removeprefix("http://inbox.example.com")
    # Following the link (a mail scanner does) changes nothing; the mail client's one-click POST does.
    assert client.get(url).status_code == 200
    assert not CategoryPreference.objects.filter(user=dana).exists()
    r = client.post(url, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200
    assert CategoryPreference.objects.filter(user=dana, category="marketing", email=False).exists()
    send([dana], title="70% off", category="marketing")
    send([dana], title="Your order shipped", category="order")
    time_passes(900)
    run_due()
    assert len(smtp_server.messages) == 2
    text, _ = parts(smtp_server.messages[1])
    assert "Your order shipped" in text and "70% off" not in text


def test_a_tampered_unsubscribe_link_is_a_400_and_changes_nothing(dana, client):
    from inbox.fallback.mail import unsubscribe_token

    token = unsubscribe_token(user_id=dana.pk, categories=["marketing"])
    r = client.post(f"/email/unsubscribe/{token[:-2]}xx/")
    assert r.status_code == 400
    assert not CategoryPreference.objects.exists()


def test_a_critical_category_has_no_unsubscribe_link_and_the_link_cannot_turn_it_off(dana, smtp_server, client):
    from inbox.fallback.mail import unsubscribe_token

    send([dana], title="New sign-in", category="security")
    time_passes(900)
    run_due()
    assert smtp_server.messages[0]["List-Unsubscribe"] is None
    token = unsubscribe_token(user_id=dana.pk, categories=["security"])
    assert client.post(f"/email/unsubscribe/{token}/").status_code == 200
    assert not CategoryPreference.objects.exists()


def test_an_smtp_server_that_is_down_is_retried_later_nothing_lost_nothing_twice(dana, smtp_server, settings):
    smtp_server.stop()
    for title in ("First", "Second"):
        send([dana], title=title)
    time_passes(900)
    results = run_due()
    assert "retrying" in outcomes(results, "email_fallback")
    assert not FallbackDelivery.objects.exists()  # the claim was given back
    assert [r.args_kwargs["kwargs"].get("attempt") for r in scheduled("email_fallback")] == [2, 2]  # each tried again later
    send([dana], title="Third")  # arrives while the server is down
    smtp_server.start()
    assert run_due() == []  # the retry waits for its time (FALLBACK_RETRY_SECONDS)
    time_passes(900)
    run_due()
    assert len(smtp_server.messages) == 1
    text, _ = parts(smtp_server.messages[0])
    assert all(t in text for t in ("First", "Second", "Third"))
    assert FallbackDelivery.objects.filter(channel="email", status="sent").count() == 3
    time_passes(24 * 3600)
    run_due()
    assert len(smtp_server.messages) == 1


def test_retries_back_off_and_stop_after_the_last_attempt(dana, smtp_server, settings):
    settings.INBOX = {**settings.INBOX, "FALLBACK_MAX_ATTEMPTS": 3, "FALLBACK_RETRY_SECONDS": 10}
    smtp_server.stop()
    n = send([dana])[0]
    waits = []
    for _ in range(3):
        time_passes(10_000) if waits else time_passes(900)
        waits.append(outcomes(run_due(), "email_fallback")[-1])
    assert waits == ["retrying", "retrying", "failed"]
    assert FallbackDelivery.objects.get(notification=n, channel="email").status == "failed"
    assert scheduled("email_fallback") == []


urlpatterns: list = []  # a URLconf without the unsubscribe link, for the test below


def test_a_message_that_cannot_be_built_claims_nothing_and_says_what_is_missing(dana, settings):
    from django.core.exceptions import ImproperlyConfigured

    from inbox.fallback.tasks import email_fallback

    settings.ROOT_URLCONF = __name__
    n = send([dana], category="order")[0]
    with pytest.raises(ImproperlyConfigured, match="unsubscribe URL"):
        email_fallback.call(notification_id=n.pk)
    assert not FallbackDelivery.objects.exists()
