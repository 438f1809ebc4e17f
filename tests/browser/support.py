"""
Helpers of the browser tests: the Chromium to launch, the REST API of a real server, signing in.

Playwright is imported softly: without it the `browser` fixture skips with the reason (fails in
CI), instead of every module failing to import.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture reports it
    expect = None

CHROMIUM = os.environ.get("INBOX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Playwright's own browser download does not work here: Debian's Chromium, headless, quiet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "pw-secret-123"  # the make_user fixture's default


def http_json(url: str, *, method: str = "GET", body=None, token: str | None = None):
    """One JSON request with the standard library; an HTTP error fails the test with the body."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {url} -> {exc.code}: {exc.read()[:500]!r}") from None
    return json.loads(raw) if raw else None


class Api:
    """The REST API of one real server, as one user (the token comes from the server itself)."""

    def __init__(self, server, username: str, password: str = PASSWORD):
        self.base = server.url
        self.credentials = {"username": username, "password": password}
        self.token = self._obtain()

    def _obtain(self) -> str:
        return http_json(f"{self.base}/api/auth/token/", method="POST", body=self.credentials)["access"]

    def _call(self, method: str, path: str, body=None):
        try:
            return http_json(f"{self.base}{path}", method=method, body=body, token=self.token)
        except AssertionError as exc:
            if "-> 401" not in str(exc):
                raise
            self.token = self._obtain()  # expired (tests with short-lived tokens)
            return http_json(f"{self.base}{path}", method=method, body=body, token=self.token)

    def send(self, recipient: str, title: str, **fields) -> dict:
        return self._call("POST", "/api/notifications/", {"recipient": recipient, "title": title, **fields})

    def get(self, path: str):
        return self._call("GET", path)

    def post(self, path: str, body=None):
        return self._call("POST", path, body if body is not None else {})


def sign_in(page, server, username: str, password: str = PASSWORD):
    """Open the inbox page, sign in, and wait until the live connection has caught up."""
    page.goto(server.url + "/")
    page.fill("#signin-username", username)
    page.fill("#signin-password", password)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-status", "open")
    return page
