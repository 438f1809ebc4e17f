"""
Limits and headers on the real servers, deployed as the Dockerfile and the README deploy them.

- The per-address limit of password checks counts the address ``INBOX_NUM_PROXIES`` entries from
  the right of X-Forwarded-For, whatever daphne's or uvicorn's ``--proxy-headers`` did to the socket
  address (daphne takes the leftmost entry, which the client writes).
- A flood of wrong logins cannot take the HTTP threads: at most ``INBOX_PASSWORD_CHECKS`` hash at
  once per process, the rest are a 429 at once, and the API keeps answering.
- With DEBUG off: a Content-Security-Policy on the page, the admin and the API docs, ``no-store``
  on tokens, HSTS on HTTPS behind the proxy, and 400s (not 500s) for what the probe found.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests import services as ext

pytestmark = pytest.mark.e2e

PASSWORD = "pw-secret-123"


def _dockerfile_server_options() -> list[str]:
    """The options the Dockerfile's CMD gives scripts/serve.py's default server, less its address and port."""
    text = (ext.ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])\s*$", text, re.M)
    args = json.loads(cmd)
    # The supervisor that runs the fallbacks' worker beside its default server (uvicorn, as serve.py's DEFAULT_SERVER).
    assert args[:2] == ["python", "scripts/serve.py"] and args[2].startswith("-"), args
    options, rest = [], args[2:]
    while rest:
        arg = rest.pop(0)
        if arg in ("--host", "--port"):
            rest.pop(0)
        else:
            options.append(arg)
    return options


# The server commands of these tests: the image's (scripts/serve.py and its uvicorn; the worker is
# not started), daphne with --proxy-headers (an operator may add it), uvicorn as the README's split
# deployment runs it (its --forwarded-allow-ips defaults to 127.0.0.1, the test's "proxy").
SERVERS = {
    "as-deployed": lambda: ["scripts/serve.py", "--host", "127.0.0.1", "--port", "{port}", *_dockerfile_server_options()],
    "daphne-proxy-headers": lambda: ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "--proxy-headers"],
    "uvicorn-proxy-headers": lambda: [*ext.SERVER_COMMANDS["uvicorn"], "--proxy-headers", "--no-access-log"],
}


@pytest.fixture
def start_server(daphne_factory, monkeypatch):
    def start(name: str, env: dict | None = None) -> ext.DaphneServer:
        monkeypatch.setitem(ext.SERVER_COMMANDS, name, SERVERS[name]())
        return daphne_factory(server=name, env={"INBOX_WORKER": "0", **(env or {})})

    return start


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def token_request(server, username: str, password: str, xff: str | None = None):
    headers = {"Content-Type": "application/json"}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    body = json.dumps({"username": username, "password": password}).encode()
    return request(server, "POST", "/api/auth/token/", body, headers)


def make_user_with_a_real_hash(username: str, *, is_staff: bool = False):
    """A user the servers can sign in: PBKDF2 (what they verify), with few iterations for speed."""
    encoded = PBKDF2PasswordHasher().encode(PASSWORD, uuid.uuid4().hex[:16], iterations=1000)
    return get_user_model().objects.create(username=username, password=encoded, is_staff=is_staff, is_superuser=is_staff)


# --- The per-address limit behind proxies ------------------------------------------------------


@pytest.mark.parametrize("server_name", ["as-deployed", "daphne-proxy-headers", "uvicorn-proxy-headers"])
def test_with_no_trusted_proxy_a_forged_x_forwarded_for_buys_no_fresh_guesses(start_server, server_name, figures):
    make_user_with_a_real_hash("alice")
    server = start_server(server_name, env={"INBOX_THROTTLE_AUTH": "3/min", "INBOX_NUM_PROXIES": "0"})
    guesses = [token_request(server, "alice", "wrong", xff=f"198.51.100.{i}")[0] for i in range(3)]
    status, headers, body = token_request(server, "alice", PASSWORD, xff="198.51.100.99")
    figures.update(server=server_name, guesses=guesses, right_password_from_a_new_forged_address=status)
    assert guesses == [401, 401, 401]
    assert status == 429, body[:200]
    assert int(headers["retry-after"]) > 0


@pytest.mark.parametrize("server_name", ["as-deployed", "daphne-proxy-headers", "uvicorn-proxy-headers"])
def test_behind_one_proxy_the_limit_counts_the_address_the_proxy_appended(start_server, server_name, figures):
    make_user_with_a_real_hash("alice")
    server = start_server(server_name, env={"INBOX_THROTTLE_AUTH": "3/min", "INBOX_NUM_PROXIES": "1"})
    # What the proxy passes on: whatever the client wrote, then the address it saw.
    guesses = [token_request(server, "alice", "wrong", xff=f"198.51.100.{i}, 203.0.113.9")[0] for i in range(3)]
    blocked = token_request(server, "alice", PASSWORD, xff="198.51.100.99, 203.0.113.9")[0]
    other_client = token_request(server, "alice", PASSWORD, xff="203.0.113.10")[0]
    figures.update(server=server_name, guesses=guesses, same_client=blocked, other_client=other_client)
    assert guesses == [401, 401, 401]
    assert blocked == 429
    assert other_client == 200


# --- Password hashing cannot take the HTTP threads ------------------------------------------------


def _admin_login_form(server) -> tuple[str, str]:
    status, headers, body = request(server, "GET", "/admin/login/")
    assert status == 200
    cookie = re.search(r"csrftoken=([^;]+)", headers["set-cookie"]).group(1)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    return cookie, token


@pytest.mark.parametrize("server_name", ["as-deployed", "uvicorn-proxy-headers"])
def test_a_burst_of_wrong_logins_is_refused_quickly_and_the_api_keeps_answering(start_server, server_name, token_for, make_user, figures):
    reader = make_user("reader")
    # Four HTTP threads, so that a few parallel logins would hold them all; PBKDF2 at the
    # production cost (the servers' hasher): a third of a second of a core, more on a busy machine.
    server = start_server(server_name, env={"INBOX_HTTP_THREADS": "4", "INBOX_PASSWORD_CHECKS": "2"})
    cookie, csrf = _admin_login_form(server)
    me = {"Authorization": f"Bearer {token_for(reader)}"}
    assert request(server, "GET", "/api/me/", headers=me)[0] == 200

    def admin_login(i):
        body = urlencode({"csrfmiddlewaretoken": csrf, "username": f"nobody-{i}", "password": "wrong", "next": "/admin/"}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={cookie}"}
        started = time.monotonic()
        status, response_headers, _ = request(server, "POST", "/admin/login/", body, headers)
        return status, response_headers.get("retry-after"), time.monotonic() - started

    def token(i):
        started = time.monotonic()
        status, response_headers, _ = token_request(server, f"nobody-{i}", "wrong")
        return status, response_headers.get("retry-after"), time.monotonic() - started

    with ThreadPoolExecutor(8) as pool:
        logins = [pool.submit(admin_login, i) for i in range(6)] + [pool.submit(token, i) for i in range(2)]
        time.sleep(0.2)  # the logins are in
        me_seconds = []
        for _ in range(3):
            started = time.monotonic()
            assert request(server, "GET", "/api/me/", headers=me)[0] == 200
            me_seconds.append(time.monotonic() - started)
        answers = [f.result() for f in logins]
    refused = [a for a in answers if a[0] == 429]
    figures.update(
        server=server_name, answers=[a[0] for a in answers], seconds=[round(a[2], 2) for a in answers],
        me_seconds=[round(s, 3) for s in me_seconds],
    )
    assert all(a[0] in (200, 401, 429) for a in answers), answers  # wrong logins: 200 (the form again), 401, or 429
    # Two hash at most at once; the others are refused, each at once, with Retry-After.
    assert len(refused) >= 4, answers
    assert all(a[1] == "1" and a[2] < 1.5 for a in refused), refused
    assert max(me_seconds) < 1.5, me_seconds


# --- DEBUG off: the headers and answers an operator expects ------------------------------------


def test_with_debug_off_the_headers_and_answers_are_what_an_operator_expects(start_server, figures):
    make_user_with_a_real_hash("alice")
    server = start_server(
        "as-deployed",
        env={"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "e2e-" + "k" * 50, "INBOX_NUM_PROXIES": "1", "DJANGO_SECURE_COOKIES": "0"},
    )
    seen = {}
    for path in ["/", "/admin/login/", "/api/docs/"]:
        status, headers, body = request(server, "GET", path)
        assert status == 200, (path, status)
        csp = headers.get("content-security-policy", "")
        seen[path] = csp
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, (path, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
    # The docs' one inline style carries this response's nonce; its start-up script is a file.
    status, headers, body = request(server, "GET", "/api/docs/")
    nonce = re.search(r"'nonce-([^']+)'", headers["content-security-policy"]).group(1)
    assert f'<style nonce="{nonce}">'.encode() in body
    assert b"<script>" not in body
    script = re.search(rb'<script src="(/api/docs/\?[^"]*script[^"]*)"', body).group(1).decode().replace("&amp;", "&")
    status, headers, _ = request(server, "GET", script)
    assert status == 200 and headers["content-type"].startswith("application/javascript")

    # Tokens are never cached, granted or refused.
    status, headers, body = token_request(server, "alice", PASSWORD, xff="203.0.113.9")
    assert status == 200
    assert "no-store" in headers["cache-control"]
    refresh = json.loads(body)["refresh"]
    status, headers, _ = request(
        server, "POST", "/api/auth/token/refresh/", json.dumps({"refresh": refresh}).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200 and "no-store" in headers["cache-control"]
    assert "no-store" in token_request(server, "alice", "wrong", xff="203.0.113.9")[1]["cache-control"]

    # HSTS on HTTPS (as the proxy reports it), never on plain HTTP.
    https = request(server, "GET", "/healthz", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})[1]
    plain = request(server, "GET", "/healthz")[1]
    assert https.get("strict-transport-security") == "max-age=31536000"
    assert "strict-transport-security" not in plain

    # The probe's 500s.
    many = "&".join(f"a{i}=1" for i in range(2001))
    answers = {
        "2001 parameters on /": request(server, "GET", f"/?{many}")[0],
        "2001 parameters on /api/me/": request(server, "GET", f"/api/me/?{many}")[0],
        "2001 parameters on /admin/": request(server, "GET", f"/admin/?{many}")[0],
        "OPTIONS /api/docs/": request(server, "OPTIONS", "/api/docs/")[0],
    }
    figures.update(csp=seen["/"], answers=answers, hsts=https.get("strict-transport-security"))
    assert answers == {
        "2001 parameters on /": 400, "2001 parameters on /api/me/": 400, "2001 parameters on /admin/": 400, "OPTIONS /api/docs/": 200,
    }


# --- The API docs and the admin work under the policy, in a real browser -----------------------


@pytest.mark.browser
def test_the_api_docs_and_the_admin_work_under_the_policy_in_chromium(start_server, monkeypatch):
    from pathlib import Path

    from tests.browser.support import CHROMIUM, CHROMIUM_ARGS
    from tests.factories import make_notification

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        ext.unavailable("playwright is not installed (pip install -r requirements-test.txt)")
    if not Path(CHROMIUM).exists():
        ext.unavailable(f"Chromium not found at {CHROMIUM}")
    root = make_user_with_a_real_hash("root", is_staff=True)
    make_notification(root, title="Hello")
    server = start_server("as-deployed")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop in this thread (tests/browser)
    violations: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            # The docs: Swagger UI renders the operations from the schema.
            page.goto(f"{server.url}/api/docs/")
            page.wait_for_selector(".opblock-summary-path[data-path='/api/notifications/']")
            assert page.evaluate("getComputedStyle(document.body).margin") == "0px"  # the nonce'd inline style applied
            # The admin: sign in, the changelist's action bar (actions.js), the add form's widgets.
            page.goto(f"{server.url}/admin/login/")
            page.fill("#id_username", "root")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{server.url}/admin/")
            page.goto(f"{server.url}/admin/inbox/notification/?q=Hello")
            page.click("#action-toggle")  # select all: actions.js counts the selection
            page.wait_for_selector(".action-counter:has-text('1 of 1 selected')")
            page.goto(f"{server.url}/admin/inbox/notification/add/")
            page.wait_for_selector("#id_recipient")
            assert page.evaluate("typeof window.showRelatedObjectLookupPopup") == "function"  # admin JS ran
        finally:
            browser.close()
    assert violations == []
