"""
The service worker in headless Chromium, as far as it allows: Chromium cannot subscribe without its
vendor's push service, so the test registers the worker on a real daphne and hands it a push
through the DevTools protocol (``ServiceWorker.deliverPushMessage``, the payload the worker would
decrypt): it shows the notification, acks it with the token it carries, and tells the open page.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import services as ext
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS

from .support import send
from .test_web_push import VAPID_KEY

pytestmark = pytest.mark.browser


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_service_worker_shows_a_push_acks_it_and_tells_the_page(transactional_db, daphne_factory, make_user, monkeypatch):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        ext.unavailable("playwright is not installed (pip install -r requirements-test.txt)")
    if not Path(CHROMIUM).exists():
        ext.unavailable(f"Chromium not found at {CHROMIUM}")
    from inbox.fallback.push import payload
    from inbox.models import Notification

    server = daphne_factory(env={"INBOX_VAPID_PRIVATE_KEY": VAPID_KEY})  # the service's settings and URLs
    dana = make_user("dana")
    n = send([dana], title="Deploy finished", link="/?from=push")[0]
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop in this thread (tests/browser/conftest.py)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.grant_permissions(["notifications"], origin=server.url)
            page = context.new_page()
            page.goto(f"{server.url}/healthz")
            cdp = context.new_cdp_session(page)
            registrations = []
            cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
            cdp.send("ServiceWorker.enable")
            scope = page.evaluate(
                """async () => {
                    window.pushes = [];
                    navigator.serviceWorker.addEventListener("message", (e) => window.pushes.push(e.data));
                    navigator.serviceWorker.startMessages();
                    const registration = await navigator.serviceWorker.register("/static/inbox/inbox-sw.js");
                    const worker = registration.installing || registration.waiting || registration.active;
                    if (worker.state !== "activated") {
                        await new Promise((resolve) => worker.addEventListener("statechange", () => worker.state === "activated" && resolve()));
                    }
                    return registration.scope;
                }"""
            )
            assert scope == f"{server.url}/static/inbox/"
            wait_for(lambda: any(not r["isDeleted"] for r in registrations))
            registration_id = next(r["registrationId"] for r in registrations if not r["isDeleted"])
            cdp.send(
                "ServiceWorker.deliverPushMessage",
                {"origin": server.url, "registrationId": registration_id, "data": payload(n).decode()},
            )
            wait_for(lambda: page.evaluate("() => window.pushes.length") > 0)  # polled: the page's CSP has no eval
            assert page.evaluate("() => window.pushes[0]")["notification"]["id"] == n.pk
            wait_for(lambda: Notification.objects.get(pk=n.pk).delivered_at is not None)
        finally:
            browser.close()
            # The ORM calls made while Playwright's loop ran opened a connection of their own context:
            # closed here, or PostgreSQL refuses to drop the test database at the end of the run.
            from django.db import connections

            connections.close_all()
