"""
What every route answers before its view: parameters no route can use are a 400, and the page, the
admin and the API docs carry a Content-Security-Policy they work under.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from django.test import Client

from tests import services as ext

MANY = "&".join(f"a{i}=1" for i in range(2001))

ROUTES = [
    ("get", "/"),
    ("get", "/healthz"),
    ("get", "/nope/"),
    ("get", "/api/me/"),
    ("get", "/api/notifications/"),
    ("get", "/api/docs/"),
    ("get", "/api/schema/"),
    ("get", "/admin/"),
    ("get", "/admin/login/"),
    ("post", "/api/auth/token/"),
    ("post", "/admin/login/"),
]


@pytest.fixture
def raw_client():
    """The test client that answers a 500 instead of raising it (to assert it never happens)."""
    return Client(raise_request_exception=False)


@pytest.mark.parametrize("debug", [True, False], ids=["debug-on", "debug-off"])
@pytest.mark.parametrize("method,path", ROUTES)
def test_a_query_string_of_2001_parameters_is_a_400_on_every_route(settings, raw_client, alice, token_for, debug, method, path):
    settings.DEBUG = debug
    response = getattr(raw_client, method)(f"{path}?{MANY}", HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    assert response.status_code == 400
    assert response.json() == {"detail": "Too many parameters (the limit is 2000)."}


@pytest.mark.parametrize("debug", [True, False], ids=["debug-on", "debug-off"])
def test_a_form_of_2001_fields_is_a_400(settings, raw_client, db, debug):
    settings.DEBUG = debug
    response = raw_client.post("/admin/login/", MANY, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400


def test_2000_parameters_are_still_read(alice_client, alice):
    query = "&".join(f"a{i}=1" for i in range(1999)) + "&unread=true"
    assert alice_client.get(f"/api/notifications/?{query}").status_code == 200


@pytest.mark.parametrize("path", ["/", "/healthz", "/api/me/", "/api/notifications/", "/api/docs/", "/admin/login/"])
def test_a_nul_in_the_query_string_is_a_400_on_every_route(raw_client, alice, token_for, path):
    response = raw_client.get(f"{path}?x=a%00b", HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    assert response.status_code == 400
    assert response.json() == {"x": ["Must not contain a NUL character."]}  # messages by parameter, as the API's 400s


# --- The API docs -----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "a token", "a staff session"])
def test_options_on_the_api_docs_is_a_200_with_or_without_a_token(raw_client, alice, staff_user, token_for, who):
    headers = {}
    if who == "a token":
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token_for(alice)}"
    elif who == "a staff session":
        raw_client.force_login(staff_user)
    response = raw_client.options("/api/docs/", **headers)
    assert response.status_code == 200
    assert response["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize(
    "method,accept,expected",
    [("get", "text/html", 200), ("head", "text/html", 200), ("post", "text/html", 405), ("delete", "text/html", 405),
     ("get", "application/json", 406)],
)
def test_the_api_docs_answer_every_method_without_a_500(raw_client, db, method, accept, expected):
    assert getattr(raw_client, method)("/api/docs/", HTTP_ACCEPT=accept).status_code == expected


def test_the_api_docs_load_their_start_up_script_from_a_file(raw_client, db):
    page = raw_client.get("/api/docs/")
    html = page.content.decode()
    assert "<script>" not in html  # no inline script: the CSP needs no 'unsafe-inline'
    (script,) = re.findall(r'<script src="(/api/docs/\?[^"]*)"', html)
    response = raw_client.get(script.replace("&amp;", "&"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in response.content


# --- Content-Security-Policy ------------------------------------------------------------------


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split("; ")}


@pytest.mark.parametrize("path", ["/", "/admin/login/", "/api/docs/", "/api/me/", "/healthz"])
def test_every_response_carries_a_content_security_policy_without_unsafe_inline(client, db, path):
    response = client.get(path)
    policy = _policy(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]


def test_the_api_docs_inline_style_carries_the_responses_nonce(client, db):
    first, second = client.get("/api/docs/"), client.get("/api/docs/")
    nonces = []
    for response in (first, second):
        (nonce,) = [s[len("'nonce-") : -1] for s in _policy(response)["style-src"] if s.startswith("'nonce-")]
        assert f'<style nonce="{nonce}">' in response.content.decode()
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    assert "'nonce-" not in client.get("/")["Content-Security-Policy"]  # only where a nonce is used


def test_the_admin_pages_have_no_inline_script(client, staff_user, alice):
    client.force_login(staff_user)
    for path in ["/admin/", "/admin/inbox/notification/", "/admin/inbox/notification/add/", "/admin/auth/user/"]:
        html = client.get(path).content.decode()
        inline = [m for m in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) if "application/json" not in m]
        assert inline == [], (path, inline)


# --- The security settings an operator gets from the start ------------------------------------


def _settings_with(env: dict) -> dict:
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        "print(json.dumps({k: getattr(settings, k, None) for k in ('SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', "
        "'SECURE_PROXY_SSL_HEADER', 'SESSION_COOKIE_SECURE')} | {'csp': bool(settings.CONTENT_SECURITY_POLICY), "
        "'csp_report_only': bool(getattr(settings, 'CONTENT_SECURITY_POLICY_REPORT_ONLY', None))}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "INBOX_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ext.ROOT, capture_output=True, text=True, check=True, timeout=60,
        env={**base, "DJANGO_SETTINGS_MODULE": "notifications_site.settings", "DJANGO_SECRET_KEY": "k" * 50, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_with_debug_off_hsts_is_on_and_the_proxy_says_when_a_request_is_https():
    behind_a_proxy = _settings_with({"DJANGO_DEBUG": "0", "INBOX_NUM_PROXIES": "1"})
    assert behind_a_proxy["SECURE_HSTS_SECONDS"] == 31_536_000
    assert behind_a_proxy["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert behind_a_proxy["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert behind_a_proxy["csp"] is True and behind_a_proxy["csp_report_only"] is False
    alone = _settings_with({"DJANGO_DEBUG": "0"})
    assert alone["SECURE_PROXY_SSL_HEADER"] is None  # no proxy: nobody may claim HTTPS in a header
    chosen = _settings_with(
        {"DJANGO_DEBUG": "0", "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Ssl-Proto", "DJANGO_SECURE_HSTS_SECONDS": "600",
         "DJANGO_CSP_REPORT_ONLY": "1"}
    )
    assert chosen["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SSL_PROTO", "https"]
    assert chosen["SECURE_HSTS_SECONDS"] == 600
    assert chosen["csp"] is False and chosen["csp_report_only"] is True
    assert _settings_with({"DJANGO_DEBUG": "1"})["SECURE_HSTS_SECONDS"] == 0  # never pinned from a laptop


def test_hsts_is_sent_on_https_requests_only(settings, client, db):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client.get("/healthz", HTTP_X_FORWARDED_PROTO="https")["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in client.get("/healthz")
