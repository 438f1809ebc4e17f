"""
inbox-client.js and the change journal, in the real browser with a scripted server (the harness of
tests/browser/test_inbox_client.py): it keeps the highest step it saw, resumes with ``since``,
follows ``more`` by step, treats replayed rows as catch-up, and reports ``sync.reset``.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import browser, pages  # noqa: F401 (fixtures)
from tests.browser.test_inbox_client import page  # noqa: F401 (a fixture)

pytestmark = pytest.mark.browser


def test_the_client_resumes_since_the_highest_step_it_saw_and_reports_a_reset(page):  # noqa: F811
    result = page.evaluate(
        """async () => {
        const client = makeClient({ token: "tok" });
        const resets = [];
        client.on("reset", (d) => resets.push(d));
        client.connect();
        await until(() => sockets.length === 1);
        const a = sockets[0];
        a.frame({ type: "sync.done", last_id: 9, unread: 1, more: false, seq: 40 });
        a.frame({ type: "notification.read", ids: [9], read: true, unread: 0, seq: 45 });
        a.serverClose(1012);
        await until(() => sockets.length === 2);
        const b = sockets[1];
        b.frame({ type: "notification.created", notification: note(47), unread: 0, seq: 48, replay: true });
        b.frame({ type: "notification.updated", notification: note(9), unread: 0, seq: 49, replay: true });
        b.frame({ type: "notification.deleted", ids: [3], unread: 0, seq: 50, reason: "retracted", replay: true });
        b.frame({ type: "sync.done", last_id: 50, unread: 0, more: true, seq: 50 });
        const more = b.sent.slice();
        b.frame({ type: "sync.done", last_id: 60, unread: 0, more: false, seq: 60 });
        b.frame({ type: "sync.reset", seq: 90, floor: 70, unread: 2 });
        const afterReset = client.seq;
        b.serverClose(4400);  // e.g. since refused: the step is dropped
        await until(() => sockets.length === 3);
        return {
          urls: sockets.map((s) => s.url), more, afterReset, resets,
          shown: client.log.filter(([t]) => t === "notification").map(([, d]) => [d.notification.id, d.catchup]),
          deleted: client.log.filter(([t]) => t === "deleted").map(([, d]) => [d.ids, d.reason]),
        };
    }"""
    )
    assert result["urls"] == [
        "ws://inbox.test/ws/notifications/",
        "ws://inbox.test/ws/notifications/?since=45",
        "ws://inbox.test/ws/notifications/",  # after a 4400 the step and the id are dropped: the pending ones
    ]
    assert result["more"] == [{"type": "sync", "since": 50}]
    assert result["shown"] == [[47, True]]  # a replayed row is not news
    assert result["deleted"] == [[[3], "retracted"]]
    assert result["afterReset"] == 90
    assert result["resets"][0] == {"seq": 90, "unread": 2} and result["resets"][1]["seq"] is None
