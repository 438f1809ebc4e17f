"""
A notification's link: an http(s) URL or a path of the product's site ("/orders/5"), never
another host in disguise, a script, or something a URL parser reads two ways.
"""

import pytest
from django.core.exceptions import ValidationError

from inbox.links import validate_link
from inbox.models import Notification

RELATIVE_AND_ABSOLUTE = [
    "/orders/5",
    "/",
    "/orders/5?tab=items#line-2",
    "/caf%C3%A9/menu",
    "/café/menu",
    "https://example.com/invoices/42",
    "http://localhost:8000/orders/5",
]
REFUSED = [
    "//evil.example",
    "//evil.example/orders/5",
    "/\\evil.example",
    "/orders\\5",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://example.com/file",
    "orders/5",
    "example.com/orders",
    "/orders/5\x00",
    "/orders/\x1f5",
    "/orders/\x7f",
    "/orders/\u202e5",
    "/orders 5",
    "/orders/5\nSet-Cookie: x=1",
    "/\torders",
    "https://",
    "https:///path",
]


def send(client, **fields):
    return client.post("/api/notifications/", {"recipient": "alice", "title": "Your order shipped", **fields}, format="json")


@pytest.mark.parametrize("link", RELATIVE_AND_ABSOLUTE)
def test_a_path_of_the_site_or_an_http_url_is_stored_as_given(sender_client, alice, link):
    response = send(sender_client, link=link)
    assert response.status_code == 201, response.json()
    assert response.json()["link"] == link
    assert Notification.objects.get().link == link


def test_no_link_is_an_empty_string(sender_client, alice):
    response = send(sender_client)
    assert response.status_code == 201
    assert response.json()["link"] == ""


@pytest.mark.parametrize("link", REFUSED)
def test_other_hosts_in_disguise_scripts_and_ambiguous_links_are_a_400_that_stores_nothing(sender_client, alice, link):
    response = send(sender_client, link=link)
    assert response.status_code == 400
    assert "link" in response.json()
    assert "single '/'" in response.json()["link"][0]
    assert not Notification.objects.exists()


@pytest.mark.parametrize("link", [5, ["/a"], {"href": "/a"}, True])
def test_a_link_that_is_not_a_string_is_a_400(sender_client, alice, link):
    response = send(sender_client, link=link)
    assert response.status_code == 400
    assert "link" in response.json()
    assert not Notification.objects.exists()


def test_a_link_longer_than_2048_characters_is_a_400(sender_client, alice):
    response = send(sender_client, link="/" + "a" * 2048)
    assert response.status_code == 400
    assert not Notification.objects.exists()


def test_whitespace_around_a_link_is_trimmed_as_for_every_text_field(sender_client, alice):
    response = send(sender_client, link="  /orders/5\n")
    assert response.status_code == 201
    assert Notification.objects.get().link == "/orders/5"


def test_the_validator_the_admin_shares_judges_as_the_api_does():
    for link in RELATIVE_AND_ABSOLUTE + [""]:
        validate_link(link)
    for link in REFUSED:
        with pytest.raises(ValidationError):
            validate_link(link.strip())
