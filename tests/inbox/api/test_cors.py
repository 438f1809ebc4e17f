"""
The product's web origins may call the REST API from their pages (django-cors-headers, following
INBOX_ALLOWED_ORIGINS): a preflight from one of them gets the CORS headers (it was a 401), the
actual request too; a foreign origin gets none, and paths outside /api/ are left alone. Through
Django's test client and through a real daphne started with the environment variable.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from tests import services as ext
from tests.conftest import access_token_for

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"


@pytest.fixture
def origins(settings):
    """The service's settings as INBOX_ALLOWED_ORIGINS=https://app.example.com makes them."""
    settings.INBOX = {**getattr(settings, "INBOX", {}), "ALLOWED_ORIGINS": [APP]}
    settings.CORS_ALLOWED_ORIGINS = [APP]
    return [APP]


def preflight(client, path: str, origin: str, method: str = "POST", headers: str = "authorization, content-type, idempotency-key"):
    return client.options(path, HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD=method, HTTP_ACCESS_CONTROL_REQUEST_HEADERS=headers)


def header_set(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def test_a_preflight_from_an_allowed_origin_gets_the_cors_headers(origins):
    response = preflight(APIClient(), "/api/notifications/", APP)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == APP
    assert header_set(response["Access-Control-Allow-Headers"]) == {"authorization", "content-type", "idempotency-key"}
    assert {"GET", "POST", "PUT", "DELETE"} <= {m.upper() for m in header_set(response["Access-Control-Allow-Methods"])}
    assert "Access-Control-Allow-Credentials" not in response  # tokens travel in headers, never cookies
    assert "origin" in header_set(response["Vary"])


def test_a_preflight_from_a_foreign_origin_gets_no_cors_headers(origins):
    for origin in ("https://evil.example", "http://app.example.com", "https://app.example.com:8443", "https://app.example.com.evil.example", "null"):
        response = preflight(APIClient(), "/api/notifications/", origin)
        assert "Access-Control-Allow-Origin" not in response, origin
        assert "Access-Control-Allow-Headers" not in response, origin


def test_an_actual_request_from_an_allowed_origin_gets_the_origin_and_the_exposed_headers(origins, alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(alice)}")

    response = client.get("/api/me/", HTTP_ORIGIN=APP)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == APP
    assert header_set(response["Access-Control-Expose-Headers"]) == {"idempotent-replayed", "retry-after"}


def test_a_refusal_to_an_allowed_origin_is_readable_by_its_page(origins):
    # A 401 the page cannot read would look like a network error to it.
    response = APIClient().get("/api/me/", HTTP_ORIGIN=APP)
    assert response.status_code == 401
    assert response["Access-Control-Allow-Origin"] == APP


def test_an_actual_request_from_a_foreign_origin_gets_no_cors_headers(origins, alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token_for(alice)}")
    response = client.get("/api/me/", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response


def test_paths_outside_the_api_get_no_cors_headers(origins):
    for path in ("/", "/healthz", "/admin/login/"):
        response = APIClient().get(path, HTTP_ORIGIN=APP)
        assert "Access-Control-Allow-Origin" not in response, path


def test_without_allowed_origins_no_origin_gets_cors_headers(settings):
    settings.CORS_ALLOWED_ORIGINS = []
    response = preflight(APIClient(), "/api/notifications/", APP)
    assert "Access-Control-Allow-Origin" not in response


# --- From the environment ---------------------------------------------------------------------------


def settings_from_env(value: str) -> subprocess.CompletedProcess:
    script = "from django.conf import settings; print(settings.CORS_ALLOWED_ORIGINS, settings.INBOX['ALLOWED_ORIGINS'])"
    env = {"DJANGO_SETTINGS_MODULE": "notifications_site.settings", "INBOX_ALLOWED_ORIGINS": value, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", script], cwd=ext.ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_inbox_allowed_origins_sets_cors_and_the_inbox_setting():
    result = settings_from_env(" https://app.example.com/ , http://localhost:3000,HTTPS://Admin.Example.com")
    assert result.returncode == 0, result.stderr
    expected = ["https://app.example.com", "http://localhost:3000", "https://admin.example.com"]
    assert result.stdout.strip() == f"{expected} {expected}"


@pytest.mark.parametrize("value", ["app.example.com", "https://app.example.com/path", "*", "https://*.example.com", "ftp://app.example.com", "https://.example.com", "https://app.example.com:99999"])
def test_a_value_of_inbox_allowed_origins_that_is_not_an_origin_is_improperly_configured(monkeypatch, value):
    from notifications_site.settings import inbox as inbox_settings

    monkeypatch.setenv("INBOX_ALLOWED_ORIGINS", f"https://ok.example.com,{value}")
    with pytest.raises(ImproperlyConfigured, match="INBOX_ALLOWED_ORIGINS: .* is not an origin"):
        inbox_settings._allowed_origins_from_env()


def test_the_service_refuses_to_start_with_a_bad_inbox_allowed_origins():
    result = settings_from_env("app.example.com")
    assert result.returncode != 0
    assert "ImproperlyConfigured: INBOX_ALLOWED_ORIGINS: 'app.example.com' is not an origin" in result.stderr


# --- Through a real daphne ---------------------------------------------------------------------------


def raw_request(url: str, method: str, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_preflight_and_a_request_cross_a_real_daphne_configured_by_the_environment(daphne_factory, alice):
    server = daphne_factory(env={"INBOX_ALLOWED_ORIGINS": APP})
    ask = {"Origin": APP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}

    status, headers = raw_request(f"{server.url}/api/notifications/", "OPTIONS", ask)
    assert status == 200
    assert headers["access-control-allow-origin"] == APP
    assert "authorization" in header_set(headers["access-control-allow-headers"])

    status, headers = raw_request(f"{server.url}/api/me/", "GET", {"Origin": APP, "Authorization": f"Bearer {access_token_for(alice)}"})
    assert status == 200
    assert headers["access-control-allow-origin"] == APP
    assert header_set(headers["access-control-expose-headers"]) == {"idempotent-replayed", "retry-after"}

    status, headers = raw_request(f"{server.url}/api/notifications/", "OPTIONS", {**ask, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in headers
