"""
inbox-client.js on its own, in the real browser: the module is served as a static file would be,
and the server side of its socket is played by the test (a scripted WebSocket given through
options.WebSocket), so every close code and frame order can be driven exactly.
"""

from __future__ import annotations

import pytest

from tests.services import ROOT

pytestmark = pytest.mark.browser

CLIENT_JS = ROOT / "inbox" / "static" / "inbox" / "inbox-client.js"
ORIGIN = "http://inbox.test"

# The server's side of each socket the client opens: records what the client sends, and lets the
# test deliver frames and closes.
HARNESS = """
async () => {
  const { InboxClient } = await import("/static/inbox/inbox-client.js");
  window.sockets = [];
  window.FakeSocket = class {
    constructor(url, protocols) {
      this.url = url; this.protocols = protocols; this.sent = []; this.readyState = 1;
      window.sockets.push(this);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close(code) { this.readyState = 3; this.closedWith = code; }
    frame(obj) { this.onmessage && this.onmessage({ data: JSON.stringify(obj) }); }
    serverClose(code) { this.readyState = 3; this.onclose && this.onclose({ code, reason: "" }); }
  };
  window.wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  window.until = async (check, ms = 2000) => {
    const end = Date.now() + ms;
    while (!check()) { if (Date.now() > end) throw new Error("timed out: " + check); await wait(5); }
  };
  window.note = (n) => ({ id: n, title: "t" + n, category: "general", delivered_at: null });
  window.makeClient = (options = {}) => {
    const client = new InboxClient({ WebSocket: FakeSocket, url: "ws://inbox.test/ws/notifications/",
                                     minDelay: 40, maxDelay: 320, rateLimitDelay: 1000, ackDelay: 10, ...options });
    client.log = [];
    for (const type of ["notification", "read", "deleted", "unread", "status", "synced", "error"]) {
      client.on(type, (detail) => client.log.push([type, detail]));
    }
    return client;
  };
}
"""


@pytest.fixture
def page(pages):
    page = pages.page()

    def serve(route):
        if route.request.url.endswith("/static/inbox/inbox-client.js"):
            route.fulfill(status=200, content_type="text/javascript", body=CLIENT_JS.read_text())
        else:
            route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>client</title>")

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.evaluate(HARNESS)
    return page


def test_the_client_authenticates_with_the_bearer_subprotocol_and_resumes_after_the_last_id(page):
    result = page.evaluate(
        """async () => {
        const client = makeClient({ token: "tok-1" }).connect();
        await until(() => sockets.length === 1);
        const s = sockets[0];
        s.frame({ type: "notification.created", notification: note(5), unread: 1, catchup: true });
        s.frame({ type: "sync.done", last_id: 9, unread: 1, more: false });
        s.frame({ type: "notification.created", notification: note(12), unread: 2 });
        s.serverClose(1012);
        await until(() => sockets.length === 2);
        return { first: [s.url, s.protocols], second: sockets[1].url, lastId: client.lastId,
                 statuses: client.log.filter(([t]) => t === "status").map(([, d]) => d.status) };
    }"""
    )
    assert result["first"] == ["ws://inbox.test/ws/notifications/", ["bearer", "tok-1"]]  # the token is not in the URL
    assert result["second"] == "ws://inbox.test/ws/notifications/?after=12"
    assert result["lastId"] == 12
    assert result["statuses"] == ["connecting", "open", "reconnecting", "connecting"]


def test_the_client_drops_duplicates_acks_once_in_a_batch_and_keeps_the_unread_count(page):
    result = page.evaluate(
        """async () => {
        const client = makeClient({ token: "tok", after: 0 }).connect();
        await until(() => sockets.length === 1);
        const s = sockets[0];
        s.frame({ type: "notification.created", notification: note(1), unread: 1, catchup: true });
        s.frame({ type: "notification.created", notification: note(2), unread: 1, catchup: true });
        s.frame({ type: "sync.done", last_id: 2, unread: 2, more: false });
        s.frame({ type: "notification.created", notification: note(2), unread: 2 });  // again
        s.frame({ type: "notification.created", notification: note(3), unread: 3 });
        s.frame({ type: "notification.read", ids: [1, 3], read: true, unread: 1 });
        s.frame({ type: "notification.deleted", ids: [2], unread: 0 });
        await until(() => s.sent.some((f) => f.type === "ack"));
        await wait(30);
        return {
          shown: client.log.filter(([t]) => t === "notification").map(([, d]) => [d.notification.id, d.catchup]),
          unread: client.log.filter(([t]) => t === "unread").map(([, d]) => d.unread),
          read: client.log.filter(([t]) => t === "read").map(([, d]) => d.ids),
          deleted: client.log.filter(([t]) => t === "deleted").map(([, d]) => d.ids),
          acks: s.sent.filter((f) => f.type === "ack"),
          url: s.url,
        };
    }"""
    )
    assert result["url"].endswith("?after=0")
    assert result["shown"] == [[1, True], [2, True], [3, False]]
    assert result["unread"] == [2, 3, 1, 0]  # catch-up frames carry a stale count: sync.done gives it
    assert result["read"] == [[1, 3]]
    assert result["deleted"] == [[2]]
    # Shown ones are acked once each, in batches: the catch-up's when it is done, then the live one.
    assert result["acks"] == [{"type": "ack", "ids": [1, 2]}, {"type": "ack", "ids": [3]}]


def test_the_client_asks_for_a_fresh_token_after_a_4401_close(page):
    result = page.evaluate(
        """async () => {
        let calls = 0;
        const client = makeClient({ token: "old", getToken: async () => "fresh-" + (++calls) }).connect();
        await until(() => sockets.length === 1);
        sockets[0].frame({ type: "sync.done", last_id: 4, unread: 0, more: false });
        sockets[0].serverClose(4401);  // expired while open: reconnect at once with a new token
        await until(() => sockets.length === 2);
        return { calls, protocols: sockets[1].protocols, url: sockets[1].url, status: client.status };
    }"""
    )
    assert result == {"calls": 1, "protocols": ["bearer", "fresh-1"], "url": "ws://inbox.test/ws/notifications/?after=4", "status": "connecting"}


def test_the_client_gives_up_when_fresh_tokens_keep_being_refused(page):
    result = page.evaluate(
        """async () => {
        let calls = 0;
        const client = makeClient({ getToken: async () => "t" + (++calls), minDelay: 5, maxDelay: 10 }).connect();
        for (let n = 1; n <= 4; n++) {
          await until(() => sockets.length === n);
          sockets[n - 1].serverClose(4401);
        }
        await wait(80);
        return { calls, sockets: sockets.length, status: client.status };
    }"""
    )
    assert result == {"calls": 4, "sockets": 4, "status": "unauthorized"}


def test_the_client_backs_off_exponentially_with_jitter_and_longer_after_4429(page):
    result = page.evaluate(
        """async () => {
        const client = makeClient({ token: "tok" }).connect();
        for (let n = 1; n <= 5; n++) {           // refused before it ever synced: backoff grows
          await until(() => sockets.length === n, 3000);
          sockets[n - 1].serverClose(1006);
        }
        await until(() => sockets.length === 6, 3000);
        sockets[5].serverClose(4429);
        const delays = client.log.filter(([t, d]) => d.status === "reconnecting").map(([, d]) => d.delay);
        client.close();
        return { delays, status: client.status };
    }"""
    )
    delays = result["delays"]
    caps = [40, 80, 160, 320, 320]  # minDelay doubling, capped at maxDelay
    for delay, cap in zip(delays[:5], caps):
        assert cap / 2 - 1 <= delay <= cap + 1, (delays, caps)
    assert delays[5] >= 1000  # rate limited: at least rateLimitDelay
    assert result["status"] == "closed"


def test_the_client_queues_reads_until_synced_and_follows_sync_more(page):
    result = page.evaluate(
        """async () => {
        const client = makeClient({ token: "tok", after: 0 }).connect();
        client.markRead([3, 3, "4", -1, 2.5]);
        client.markAllRead("billing");
        await until(() => sockets.length === 1);
        const s = sockets[0];
        s.frame({ type: "sync.done", last_id: 500, unread: 700, more: true });
        const beforeDone = s.sent.slice();
        s.frame({ type: "sync.done", last_id: 650, unread: 650, more: false });
        client.close();
        s.frame({ type: "notification.created", notification: note(999), unread: 1 });  // after close: ignored
        await wait(120);
        return { beforeDone, sent: s.sent, closedWith: s.closedWith, sockets: sockets.length,
                 shown: client.log.filter(([t]) => t === "notification").length, status: client.status };
    }"""
    )
    assert result["beforeDone"] == [{"type": "sync", "after": 500}]  # reads wait until caught up
    assert result["sent"] == [
        {"type": "sync", "after": 500},
        {"type": "read", "ids": [3, 4]},
        {"type": "read_all", "category": "billing"},
    ]
    assert result["closedWith"] == 1000
    assert result["sockets"] == 1  # no reconnect after close()
    assert result["shown"] == 0
    assert result["status"] == "closed"
