/**
 * inbox-client.js: a small, dependency-free ES module for the Inbox WebSocket API.
 *
 *   import { InboxClient } from "/static/inbox/inbox-client.js";
 *   const inbox = new InboxClient({ token, getToken: refreshMyToken });
 *   inbox.on("notification", ({ notification }) => show(notification));
 *   inbox.on("unread", ({ unread }) => setBadge(unread));
 *   inbox.connect();
 *
 * What it does for you:
 * - authenticates with the JWT as the subprotocol pair ["bearer", token] (never in the URL);
 *   on a 4401 close (token expired or invalid) it asks getToken() for a fresh one and reconnects;
 * - reconnects with exponential backoff and full jitter (longer after a 4429 rate limit, and after a
 *   4408: the user has the most sockets the server allows open in other tabs);
 * - resumes with ?since=<the highest journal step seen> (every change while it was away: new
 *   notifications, reads, edits, deletions, replayed in order, each once), or before its first
 *   sync.done with ?after=<last id seen> (new notifications only);
 * - drops duplicates by id (except a deliberate resend), acks (in batches) what it hands to you, keeps
 *   the unread count;
 * - pings every 25 s and drops a connection that stops answering.
 *
 * Events (listen with on(type, fn) or addEventListener(type, e => e.detail)):
 *   notification {notification, catchup, resend, unread}   (catchup: also for a replayed one; not news to toast)
 *                                                    a notification not seen before, or one pushed again on
 *                                                    purpose (resend: true, an operator's Resend): show it again
 *   updated      {notification, unread}              a notification you may have was edited: replace it in place
 *                                                    (not a new one: count nothing)
 *   read         {ids, read, unread}                 notifications marked read (read: false = unread again)
 *   deleted      {ids, unread, reason}               notifications deleted (reason: deleted, retracted, expired)
 *   reset        {seq, unread}                       the server cannot replay from our step (too old): reload the list
 *   unread       {unread}                            the unread count changed
 *   status       {status, attempt, delay, code}      connecting | open | reconnecting | closed | unauthorized
 *   synced       {lastId, seq, unread, caughtUp, resumed}  a (re)connection has caught up (resumed: by journal step)
 *   error        {code, detail}                      an error frame from the server
 */

const CLOSE_NORMAL = 1000;
const CLOSE_BAD_REQUEST = 4400;
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_RATE_LIMITED = 4429;
const CLOSE_TOO_MANY_SOCKETS = 4408; // the user's other tabs hold the server's cap of sockets
const CLOSE_DEAD = 4000; // our own code: the server stopped answering pings

const MAX_IDS_PER_FRAME = 1000;
const MAX_SEEN = 10000;
const MAX_OUTBOX = 200;
const MAX_AUTH_FAILURES = 3;

function defaultUrl() {
  if (typeof location === "undefined") return null;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/notifications/`;
}

function withParam(url, name, value) {
  const u = new URL(url);
  u.searchParams.delete("after");
  u.searchParams.set(name, String(value));
  return u.toString();
}

function withAfter(url, after) {
  const u = new URL(url, typeof location === "undefined" ? undefined : location.href);
  u.searchParams.set("after", String(after));
  return u.toString();
}

function cleanIds(ids) {
  const list = Array.isArray(ids) ? ids : [ids];
  return [...new Set(list.map(Number).filter((i) => Number.isSafeInteger(i) && i > 0))];
}

function chunks(list, size) {
  const out = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

export class InboxClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.token]       an access token (JWT) to start with
   * @param {() => Promise<string|null>|string|null} [options.getToken]
   *        returns a fresh access token; called when there is none and after a 4401 close.
   *        Return null to give up (status "unauthorized").
   * @param {string} [options.url]         ws(s)://host/ws/notifications/ (default: this page's host)
   * @param {number} [options.after]       resume after this notification id (default: pending ones)
   * @param {string} [options.resumeKey]   keep the last id seen in sessionStorage under this key
   * @param {boolean} [options.autoAck=true] ack every notification handed to a listener
   * @param {number} [options.minDelay=500] [options.maxDelay=30000] backoff bounds, in ms
   * @param {number} [options.rateLimitDelay=30000] at least this long after a 4429 or 4408 close
   * @param {number} [options.heartbeat=25000] ping period; [options.pongTimeout=10000]
   */
  constructor(options = {}) {
    super();
    this.url = options.url || defaultUrl();
    if (!this.url) throw new TypeError("InboxClient: give options.url outside a browser page");
    this._token = options.token || null;
    this._getToken = options.getToken || null;
    if (!this._token && !this._getToken) throw new TypeError("InboxClient: give options.token or options.getToken");
    this._storage = null;
    this._resumeKey = options.resumeKey || null;
    if (this._resumeKey) {
      try {
        this._storage = globalThis.sessionStorage || null;
      } catch {
        this._storage = null; // storage can be blocked by the browser
      }
    }
    this.lastId = Number.isSafeInteger(options.after) && options.after >= 0 ? options.after : this._loadLastId();
    /** The highest step of the user's change journal seen (frames' seq); null until the first sync.done. */
    this.seq = Number.isSafeInteger(options.since) && options.since >= 0 ? options.since : null;
    this.autoAck = options.autoAck !== false;
    this.minDelay = options.minDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 30000;
    this.rateLimitDelay = options.rateLimitDelay ?? 30000;
    this.heartbeat = options.heartbeat ?? 25000;
    this.pongTimeout = options.pongTimeout ?? 10000;
    this.ackDelay = options.ackDelay ?? 150;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;

    /** The unread count as last told by the server (null until then). */
    this.unread = null;
    /** connecting | open | reconnecting | closed | unauthorized */
    this.status = "closed";

    this._ws = null;
    this._synced = false;
    this._stopped = true;
    this._attempt = 0;
    this._authFailures = 0;
    this._freshToken = false;
    this._retryTimer = null;
    this._heartbeatTimer = null;
    this._pongTimer = null;
    this._ackTimer = null;
    this._ackIds = new Set();
    this._outbox = [];
    this._seen = new Set();
    this._caughtUp = 0;
    this._onOnline = () => {
      if (this.status === "reconnecting") this.reconnect();
    };
  }

  // --- Public API ------------------------------------------------------------------------

  /** Subscribe to an event; returns a function that unsubscribes. */
  on(type, handler) {
    const listener = (event) => handler(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Open the connection (and keep it open until close()). Returns the client. */
  connect() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._authFailures = 0;
    if (typeof addEventListener === "function") addEventListener("online", this._onOnline);
    this._open();
    return this;
  }

  /** Drop the current connection (if any) and connect again now. */
  reconnect() {
    if (this._stopped) return this.connect();
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this._ws) this._drop(this._ws, CLOSE_NORMAL, 0);
    else this._open();
    return this;
  }

  /** Mark notifications read; every tab of the user hears about it (event "read"). */
  markRead(ids) {
    for (const chunk of chunks(cleanIds(ids), MAX_IDS_PER_FRAME)) this._send({ type: "read", ids: chunk });
  }

  /** Mark all (or one category's) notifications read. */
  markAllRead(category) {
    this._send(category ? { type: "read_all", category } : { type: "read_all" });
  }

  /** Tell the server these notifications were shown (done for you with autoAck). Batched. */
  ack(ids) {
    for (const id of cleanIds(ids)) this._ackIds.add(id);
    if (!this._ackTimer && this._ackIds.size) this._ackTimer = setTimeout(() => this._flushAcks(), this.ackDelay);
  }

  /** Close for good: no reconnect. */
  close() {
    this._flushAcks();
    this._stopped = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (typeof removeEventListener === "function") removeEventListener("online", this._onOnline);
    const ws = this._ws;
    this._detach();
    if (ws) {
      try {
        ws.close(CLOSE_NORMAL);
      } catch {
        /* already closing */
      }
    }
    this._setStatus("closed", { code: CLOSE_NORMAL });
  }

  // --- Connection --------------------------------------------------------------------------

  async _open() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._setStatus("connecting", { attempt: this._attempt });
    let token;
    try {
      token = await this._tokenForConnect();
    } catch (err) {
      this._emit("error", { code: "token_unavailable", detail: String(err && err.message ? err.message : err) });
      if (!this._stopped) this._retry(this._backoff());
      return;
    }
    if (this._stopped || this._ws) return;
    if (!token) {
      this._giveUp();
      return;
    }
    let ws;
    try {
      const url =
        this.seq !== null ? withParam(this.url, "since", this.seq) : this.lastId === null ? this.url : withAfter(this.url, this.lastId);
      ws = new this._WebSocket(url, ["bearer", token]);
    } catch (err) {
      this._emit("error", { code: "connect_failed", detail: String(err) });
      this._retry(this._backoff());
      return;
    }
    this._ws = ws;
    this._synced = false;
    this._resumedBySeq = this.seq !== null;
    this._caughtUp = 0;
    ws.onmessage = (event) => this._onMessage(ws, event.data);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event always follows
  }

  async _tokenForConnect() {
    if (this._token && !this._freshToken) return this._token;
    if (!this._getToken) return this._freshToken ? null : this._token;
    const token = await this._getToken();
    this._token = token || null;
    this._freshToken = false;
    return this._token;
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    const wasSynced = this._synced;
    this._detach();
    if (this._stopped) return;
    this._emit("disconnected", { code, reason });
    if (code === CLOSE_UNAUTHORIZED) {
      // Expired mid-life: refresh and reconnect at once. Refused straight away: the fresh
      // token did not help either; back off, and give up after a few.
      this._freshToken = true;
      this._authFailures = wasSynced ? 1 : this._authFailures + 1;
      if (this._authFailures > MAX_AUTH_FAILURES) {
        this._giveUp(code);
        return;
      }
      this._retry(wasSynced ? 0 : this._backoff(), code);
    } else if (code === CLOSE_RATE_LIMITED || code === CLOSE_TOO_MANY_SOCKETS) {
      this._retry(Math.max(this.rateLimitDelay, this._backoff()), code);
    } else if (code === CLOSE_BAD_REQUEST) {
      this._setLastId(null); // the server refused our ?after= or ?since=: start from the pending ones
      if (this.seq !== null) this._emit("reset", { seq: null, unread: this.unread });
      this.seq = null;
      this._retry(this._backoff(), code);
    } else {
      this._retry(wasSynced && this._attempt === 0 ? this._jitter(this.minDelay) : this._backoff(), code);
    }
  }

  /** Forget a socket, and treat it as closed with `code` (used when it stopped answering). */
  _drop(ws, code, delay) {
    this._detach();
    try {
      ws.close(code);
    } catch {
      /* ignore */
    }
    if (!this._stopped) this._retry(delay ?? this._backoff(), code);
  }

  _detach() {
    const ws = this._ws;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
    }
    this._ws = null;
    this._synced = false;
    clearInterval(this._heartbeatTimer);
    clearTimeout(this._pongTimer);
    this._heartbeatTimer = this._pongTimer = null;
  }

  _retry(delay, code) {
    clearTimeout(this._retryTimer);
    this._setStatus("reconnecting", { attempt: this._attempt, delay: Math.round(delay), code });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._stopped) this._open();
    }, delay);
  }

  _giveUp(code = CLOSE_UNAUTHORIZED) {
    this._stopped = true;
    this._setStatus("unauthorized", { code });
  }

  /** Exponential backoff with full jitter: a random delay in [cap/2, cap], cap doubling. */
  _backoff() {
    const cap = Math.min(this.maxDelay, this.minDelay * 2 ** this._attempt);
    this._attempt = Math.min(this._attempt + 1, 30);
    return this._jitter(cap);
  }

  _jitter(cap) {
    return cap / 2 + (Math.random() * cap) / 2;
  }

  _startHeartbeat(ws) {
    clearInterval(this._heartbeatTimer);
    if (!this.heartbeat) return;
    this._heartbeatTimer = setInterval(() => {
      if (ws !== this._ws || ws.readyState !== 1) return;
      ws.send(JSON.stringify({ type: "ping" }));
      clearTimeout(this._pongTimer);
      this._pongTimer = setTimeout(() => {
        if (ws === this._ws) this._drop(ws, CLOSE_DEAD);
      }, this.pongTimeout);
    }, this.heartbeat);
  }

  // --- Frames ------------------------------------------------------------------------------

  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    clearTimeout(this._pongTimer); // any frame proves the connection is alive
    this._pongTimer = null;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    // Journal steps arrive in order on one socket; an after= catch-up's rows do not move our step.
    if (Number.isSafeInteger(frame.seq) && !frame.catchup && this.seq !== null && frame.seq > this.seq) this.seq = frame.seq;
    switch (frame.type) {
      case "notification.created":
        this._onCreated(frame);
        break;
      case "notification.updated":
        if (frame.notification && Number.isSafeInteger(frame.notification.id)) {
          this._emit("updated", { notification: frame.notification, unread: frame.unread });
        }
        this._setUnread(frame.unread);
        break;
      case "notification.read":
        this._emit("read", { ids: frame.ids || [], read: frame.read !== false, unread: frame.unread });
        this._setUnread(frame.unread);
        break;
      case "notification.deleted":
        this._emit("deleted", { ids: frame.ids || [], unread: frame.unread, reason: frame.reason || "deleted" });
        this._setUnread(frame.unread);
        break;
      case "notification.seen":
        this._emit("seen", { ids: frame.ids || [], unseen: frame.unseen, unread: frame.unread });
        this._setUnread(frame.unread);
        break;
      case "notification.archived":
      case "notification.unarchived":
        this._emit("archived", { ids: frame.ids || [], archived: frame.type === "notification.archived", unread: frame.unread, unseen: frame.unseen });
        this._setUnread(frame.unread);
        break;
      case "notification.interacted":
        // A click on an action reads the notification: a read for the list, then the click itself.
        this._emit("read", { ids: frame.ids || [], read: true, unread: frame.unread });
        this._emit("interacted", { id: frame.id, action: frame.action, unread: frame.unread });
        this._setUnread(frame.unread);
        break;
      case "sync.reset":
        // Older than the journal keeps: reload the list, then resume from the step given.
        this.seq = Number.isSafeInteger(frame.seq) ? frame.seq : null;
        this._setUnread(frame.unread);
        this._emit("reset", { seq: this.seq, unread: frame.unread });
        this._onSyncDone(ws, { last_id: null, unread: frame.unread, more: false });
        break;
      case "sync.done":
        this._onSyncDone(ws, frame);
        break;
      case "error":
        this._emit("error", { code: frame.code, detail: frame.detail });
        break;
      default:
        break; // pong, or a frame type from a newer server
    }
  }

  _onCreated(frame) {
    const n = frame.notification;
    if (!n || !Number.isSafeInteger(n.id)) return;
    // A resend is deliberate (an operator pushed it again): shown again although its id was seen.
    const resend = frame.resend === true;
    const duplicate = this._seen.has(n.id) && !resend;
    if (!duplicate) this._remember(n.id);
    if (this.lastId === null || n.id > this.lastId) this._setLastId(n.id);
    const catchup = !!(frame.catchup || frame.replay);
    if (!duplicate) {
      if (catchup) this._caughtUp += 1;
      // A grouped send says its group's count now (group_count): "Ana and 12 others".
      this._emit("notification", { notification: n, catchup, resend, unread: frame.unread, groupCount: frame.group_count });
      if (this.autoAck && !n.delivered_at) this.ack([n.id]);
    }
    // During a catch-up the count is the one at its start; sync.done brings the final one.
    if (!catchup) this._setUnread(frame.unread);
  }

  _onSyncDone(ws, frame) {
    if (Number.isSafeInteger(frame.last_id) && (this.lastId === null || frame.last_id > this.lastId)) {
      this._setLastId(frame.last_id);
    }
    if (Number.isSafeInteger(frame.seq) && (this.seq === null || frame.seq > this.seq)) this.seq = frame.seq;
    if (frame.more) {
      ws.send(JSON.stringify(Number.isSafeInteger(frame.seq) && this._resumedBySeq ? { type: "sync", since: frame.seq } : { type: "sync", after: frame.last_id }));
      return;
    }
    this._setUnread(frame.unread);
    const first = !this._synced;
    this._synced = true;
    this._attempt = 0;
    this._authFailures = 0;
    if (first) {
      this._startHeartbeat(ws);
      this._setStatus("open");
      this._flushOutbox();
      this._flushAcks();
      this._emit("synced", { lastId: this.lastId, seq: this.seq, unread: this.unread, caughtUp: this._caughtUp, resumed: this._resumedBySeq });
    }
  }

  _send(frame) {
    const ws = this._ws;
    if (ws && this._synced && ws.readyState === 1) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    if (this._outbox.length < MAX_OUTBOX) this._outbox.push(frame); // sent once connected again
    return false;
  }

  _flushOutbox() {
    const frames = this._outbox.splice(0);
    for (const frame of frames) this._send(frame);
  }

  _flushAcks() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    const ws = this._ws;
    if (!this._ackIds.size || !ws || !this._synced || ws.readyState !== 1) return;
    const ids = [...this._ackIds];
    this._ackIds.clear();
    for (const chunk of chunks(ids, MAX_IDS_PER_FRAME)) ws.send(JSON.stringify({ type: "ack", ids: chunk }));
  }

  // --- State -------------------------------------------------------------------------------

  _remember(id) {
    this._seen.add(id);
    if (this._seen.size > MAX_SEEN) this._seen.delete(this._seen.values().next().value);
  }

  _setUnread(value) {
    if (!Number.isSafeInteger(value) || value === this.unread) return;
    this.unread = value;
    this._emit("unread", { unread: value });
  }

  _setLastId(id) {
    this.lastId = id;
    if (!this._storage) return;
    try {
      if (id === null) this._storage.removeItem(this._resumeKey);
      else this._storage.setItem(this._resumeKey, String(id));
    } catch {
      /* quota or privacy mode: memory is enough */
    }
  }

  _loadLastId() {
    if (!this._storage) return null;
    try {
      const raw = this._storage.getItem(this._resumeKey);
      const id = raw === null ? NaN : Number(raw);
      return Number.isSafeInteger(id) && id >= 0 ? id : null;
    } catch {
      return null;
    }
  }

  _setStatus(status, extra = {}) {
    const changed = status !== this.status;
    this.status = status;
    if (changed || status === "reconnecting") this._emit("status", { status, ...extra });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export default InboxClient;
