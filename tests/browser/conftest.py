"""
Fixtures for the browser tests: headless Chromium (Debian's package) driven by Playwright's sync
API, against real daphne processes started by the test.

Without Chromium or Playwright the tests skip with the reason, except in CI (CI=true), where they
fail: .ci/run installs Chromium.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import services as ext

from .support import CHROMIUM, CHROMIUM_ARGS, Api

ARTIFACTS = ext.ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        ext.unavailable("playwright is not installed (pip install -r requirements-test.txt)")
    if not Path(CHROMIUM).exists():
        ext.unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set INBOX_CHROMIUM)")
    # Playwright's sync API keeps its event loop marked as running in this thread between calls,
    # so Django's async-safety check would refuse the ORM in the test (and in pytest-django's
    # flush). Nothing here runs inside that loop: allow it while the browser is up.
    # https://pytest-django.readthedocs.io/en/latest/faq.html
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()


class Pages:
    """Opens browser contexts (one per user, like separate browsers) and watches them for page errors."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.errors: list[str] = []

    def context(self, **options):
        context = self.browser.new_context(**{"viewport": {"width": 1000, "height": 760}, **options})
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        return context

    def page(self, context=None):
        page = (context or self.context()).new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        # Printed, so that a failing test shows what the page said.
        page.on("console", lambda msg: print(f"[console.{msg.type}] {msg.text}"))
        return page

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser):
    """Pages in fresh browser contexts; an uncaught JavaScript error fails the test."""
    pages = Pages(browser)
    yield pages
    pages.close()
    assert not pages.errors, f"JavaScript errors in the page: {pages.errors}"


@pytest.fixture
def artifacts() -> Path:
    """test-artifacts/ (gitignored): screenshots saved by the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def api():
    """Api(server, username): the REST API of a real server as that user."""
    return Api


@pytest.fixture
def inbox_server(daphne_factory):
    """Start a real daphne serving the inbox (server_settings.py says what differs)."""

    def start(*, redis_url: str | None = None, env: dict | None = None):
        return daphne_factory(redis_url=redis_url, env={"DJANGO_SETTINGS_MODULE": "tests.browser.server_settings", **(env or {})})

    return start
