"""GET/PUT /api/preferences/: a person's own preferences; every bad field is a 400 that names it and stores nothing."""

from __future__ import annotations

import pytest

from inbox.models import CategoryPreference, DeliveryProfile

URL = "/api/preferences/"
pytestmark = pytest.mark.django_db


def put(client, body):
    return client.put(URL, body, format="json")


def nothing_stored():
    return not DeliveryProfile.objects.exists() and not CategoryPreference.objects.exists()


def test_a_person_without_preferences_reads_the_defaults(client_for, alice):
    r = client_for(alice).get(URL)
    assert r.status_code == 200
    assert r.json() == {
        "time_zone": "UTC",
        "quiet_hours": None,
        "categories": {},
        "critical_categories": ["security"],
        "channels": ["in_app", "web_push", "email"],
    }


def test_a_person_sets_a_time_zone_quiet_hours_and_per_category_channels_and_reads_them_back(client_for, alice):
    client = client_for(alice)
    r = put(client, {
        "time_zone": "Europe/Paris",
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "categories": {"marketing": {"email": False, "web_push": False}, "order": {"muted_until": "2099-01-31T18:00:00Z"}},
    })
    assert r.status_code == 200, r.content
    expected = {
        "time_zone": "Europe/Paris",
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "categories": {
            "marketing": {"in_app": True, "web_push": False, "email": False, "muted_until": None},
            "order": {"in_app": True, "web_push": True, "email": True, "muted_until": "2099-01-31T18:00:00Z"},
        },
    }
    assert {k: r.json()[k] for k in expected} == expected
    assert {k: client.get(URL).json()[k] for k in expected} == expected


def test_keys_left_out_stay_and_a_category_set_to_null_is_reset(client_for, alice):
    client = client_for(alice)
    put(client, {"time_zone": "Asia/Tokyo", "categories": {"marketing": {"email": False}, "order": {"in_app": False}}})
    r = put(client, {"categories": {"marketing": {"web_push": False}, "order": None}})
    assert r.status_code == 200
    body = r.json()
    assert body["time_zone"] == "Asia/Tokyo"
    assert body["categories"] == {"marketing": {"in_app": True, "web_push": False, "email": False, "muted_until": None}}
    assert put(client, {"quiet_hours": {"start": "12:00", "end": "13:00"}}).json()["quiet_hours"] == {"start": "12:00", "end": "13:00"}
    assert put(client, {"quiet_hours": None}).json()["quiet_hours"] is None


def test_preferences_are_each_persons_own(client_for, alice, bob):
    put(client_for(alice), {"categories": {"marketing": {"email": False}}})
    assert client_for(bob).get(URL).json()["categories"] == {}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone"),
        ({"time_zone": 3}, "time_zone"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "10pm", "end": "7am"}}, "quiet_hours"),
        ({"quiet_hours": "22:00-07:00"}, "quiet_hours"),
        ({"categories": ["order"]}, "categories"),
        ({"categories": {"not a slug!": {"email": False}}}, "categories"),
        ({"categories": {"order": {"sms": False}}}, "categories"),
        ({"categories": {"order": {"email": "no"}}}, "categories"),
        ({"categories": {"order": {"muted_until": "tomorrow"}}}, "categories"),
        ({"categories": {"order": {"muted_until": "2026-13-45T00:00:00Z"}}}, "categories"),
        ({"categories": {"order": {"muted_until": 1767225600}}}, "categories"),
        ({"categories": {"order": True}}, "categories"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_field_is_a_400_that_names_it_and_stores_nothing(client_for, alice, body, field):
    r = put(client_for(alice, raise_exceptions=False), {**body, "time_zone": body.get("time_zone", "Europe/Paris")})
    assert r.status_code == 400, r.content
    assert field in r.json()
    assert nothing_stored()


def test_a_body_that_is_not_an_object_or_not_json_is_a_400(client_for, alice):
    client = client_for(alice, raise_exceptions=False)
    assert client.put(URL, ["time_zone"], format="json").status_code == 400
    assert client.put(URL, b"{nope", content_type="application/json").status_code == 400
    assert nothing_stored()


def test_a_critical_category_cannot_be_turned_off_or_muted_but_can_be_left_on(client_for, alice):
    client = client_for(alice, raise_exceptions=False)
    for change in ({"email": False}, {"in_app": False}, {"muted_until": "2099-01-01T00:00:00Z"}):
        r = put(client, {"categories": {"security": change}})
        assert r.status_code == 400
        assert "security" in r.json()["categories"]
        assert "critical" in r.json()["categories"]["security"][0]
    assert nothing_stored()
    assert put(client, {"categories": {"security": {"email": True, "muted_until": None}}}).status_code == 200


def test_an_operator_may_list_the_categories_people_may_set(client_for, alice, settings):
    settings.INBOX = {**settings.INBOX, "PREFERENCE_CATEGORIES": ["order", "marketing"]}
    client = client_for(alice, raise_exceptions=False)
    r = put(client, {"categories": {"order": {"email": False}, "unheard-of": {"email": False}}})
    assert r.status_code == 400 and r.json()["categories"] == {"unheard-of": ["Unknown category."]}
    assert nothing_stored()
    assert put(client, {"categories": {"order": {"email": False}}}).status_code == 200


def test_an_anonymous_request_is_a_401(anon_client):
    assert anon_client.get(URL).status_code == 401
    assert anon_client.put(URL, {}, format="json").status_code == 401
