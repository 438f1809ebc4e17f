/**
 * The inbox page: sign in through the API, list notifications, live updates through InboxClient.
 *
 * Tokens live in this tab only: the access token in memory, the refresh token in sessionStorage
 * (so a reload keeps you signed in). Requests are sent without cookies, so the page never rides
 * on an admin session of the same site.
 */

import { InboxClient } from "./inbox-client.js";
import { mountPreferences } from "./inbox-preferences.js";

const PAGE_SIZE = 20;
const REFRESH_KEY = "inbox.refresh";
const TOAST_MS = 5000;
const MAX_TOASTS = 3;

const $ = (id) => document.getElementById(id);

const state = {
  access: null,
  refresh: null,
  me: null,
  client: null,
  next: null,
  items: new Map(), // id -> <li>
  unread: 0,
  refreshing: null,
  generation: 0, // bumps on sign-out so late answers of a previous session are ignored
  prefs: null, // the preferences panel (inbox-preferences.js)
  groupCounts: new Map(), // group -> its count from the latest grouped frame (issue 21)
};

// --- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, data) {
    super(describeError(status, data));
    this.status = status;
    this.data = data;
  }
}

function describeError(status, data) {
  if (data && typeof data === "object") {
    if (typeof data.detail === "string") return data.detail;
    for (const [field, value] of Object.entries(data)) {
      const text = Array.isArray(value) ? value.join(" ") : typeof value === "string" ? value : JSON.stringify(value);
      return field === "non_field_errors" ? text : `${field}: ${text}`;
    }
  }
  return `The server answered ${status}.`;
}

async function api(path, { method = "GET", body, auth = true, retry = true } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth && state.access) headers.Authorization = `Bearer ${state.access}`;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  if (res.status === 401 && auth && retry && state.refresh) {
    if (await refreshAccess()) return api(path, { method, body, auth, retry: false });
  }
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** A fresh access token from the refresh token (one request at a time); null when signed out. */
function refreshAccess() {
  if (!state.refresh) return Promise.resolve(null);
  if (!state.refreshing) {
    const generation = state.generation;
    state.refreshing = (async () => {
      try {
        const data = await api("/api/auth/token/refresh/", { method: "POST", body: { refresh: state.refresh }, auth: false });
        if (generation !== state.generation) return null;
        state.access = data.access;
        if (data.refresh) saveRefresh(data.refresh);
        return state.access;
      } catch (err) {
        if (err instanceof ApiError && (err.status === 400 || err.status === 401)) {
          signOut("Your session has ended. Please sign in again.");
          return null;
        }
        throw err; // the network: the socket client retries with backoff
      } finally {
        state.refreshing = null;
      }
    })();
  }
  return state.refreshing;
}

function saveRefresh(token) {
  state.refresh = token;
  try {
    if (token) sessionStorage.setItem(REFRESH_KEY, token);
    else sessionStorage.removeItem(REFRESH_KEY);
  } catch {
    /* storage blocked: the session lasts as long as the page */
  }
}

function loadRefresh() {
  try {
    return sessionStorage.getItem(REFRESH_KEY);
  } catch {
    return null;
  }
}

// --- Session --------------------------------------------------------------------------------

async function signIn(username, password) {
  const data = await api("/api/auth/token/", { method: "POST", body: { username, password }, auth: false });
  state.access = data.access;
  saveRefresh(data.refresh);
  await start();
}

async function start() {
  const generation = state.generation;
  if (!state.access && !(await refreshAccess())) return;
  const [me, page, count] = await Promise.all([
    api("/api/me/"),
    api(`/api/notifications/?page_size=${PAGE_SIZE}`),
    api("/api/notifications/unread-count/"),
  ]);
  if (generation !== state.generation) return;
  state.me = me;
  $("username").textContent = me.username;
  $("send").hidden = !me.can_send;
  showInbox(true);
  state.prefs.load().catch(() => {}); // the inbox works without its panel
  clearList();
  for (const n of page.results) upsert(n);
  setNext(page.next);
  setBadge(count.unread);
  updateEmpty();

  // Resume after the newest one listed: what arrives meanwhile comes by catch-up, once.
  const newest = page.results.length ? page.results[0].id : 0;
  const client = new InboxClient({ token: state.access, getToken: refreshAccess, after: newest });
  state.client = client;
  client.on("notification", ({ notification, catchup, resend, groupCount }) => {
    if (notification.group && Number.isInteger(groupCount)) state.groupCounts.set(notification.group, groupCount);
    const isNew = !state.items.has(notification.id);
    if (resend && !isNew) replaceItem(notification, { fresh: true }); // pushed again: shown again, as it is now
    else upsert(notification, { fresh: true });
    updateEmpty();
    if ((isNew || resend) && !catchup) toast(notification);
  });
  client.on("updated", ({ notification, unread }) => {
    // Edited (an operator in the admin): the new version in place, in the list and in its toast.
    // Not listed (older than what was loaded): nothing to show. The badge takes the server's count.
    replaceItem(notification);
    updateToast(notification);
    if (Number.isInteger(unread)) setBadge(unread);
  });
  client.on("read", ({ ids, read, unread }) => {
    ids.forEach((id) => setRead(id, read));
    if (Number.isInteger(unread)) setBadge(unread);
  });
  client.on("deleted", ({ ids, unread }) => {
    ids.forEach(removeItem);
    updateEmpty();
    if (Number.isInteger(unread)) setBadge(unread);
  });
  client.on("archived", ({ ids, archived, unread }) => {
    // Archived: out of the main list (an unarchived one comes back on the next load).
    if (archived) ids.forEach(removeItem);
    updateEmpty();
    if (Number.isInteger(unread)) setBadge(unread);
  });
  client.on("unread", ({ unread }) => setBadge(unread));
  client.on("status", showStatus);
  let connections = 0;
  client.on("reset", () => reloadList(generation).catch(() => {})); // the journal cannot replay that far back
  client.on("synced", ({ caughtUp, unread, resumed }) => {
    if (Number.isInteger(unread)) setBadge(unread);
    if (caughtUp === 1) toast(newestItemData());
    else if (caughtUp > 1) toast({ title: `${caughtUp} new notifications`, message: "They arrived while you were away.", category: "inbox" });
    // A resume by journal step (resumed) replayed every change; a catch-up by id brings new
    // notifications only, not what changed on older ones: refresh those from the API.
    if (++connections > 1 && !resumed) refreshListed(generation).catch(() => {});
  });
  client.connect();
  // Ack what the first page shows; the socket sends them once it is up.
  client.ack(page.results.filter((n) => n.state === "pending").map((n) => n.id));
}

function signOut(message) {
  state.generation += 1;
  if (state.client) state.client.close();
  state.client = null;
  state.access = null;
  state.me = null;
  saveRefresh(null);
  clearList();
  state.prefs.reset();
  setBadge(0);
  showStatus({ status: "closed" });
  showInbox(false);
  const error = $("signin-error");
  error.textContent = message || "";
  error.hidden = !message;
}

function showInbox(signedIn) {
  $("signin").hidden = signedIn;
  $("inbox").hidden = !signedIn;
  $("account").hidden = !signedIn;
  $("conn").hidden = !signedIn;
  if (!signedIn) $("signin-username").focus();
}

// --- The list -------------------------------------------------------------------------------

function clearList() {
  state.items.clear();
  $("list").replaceChildren();
  setNext(null);
}

function upsert(n, { fresh = false } = {}) {
  const existing = state.items.get(n.id);
  if (existing) {
    setRead(n.id, Boolean(n.read_at));
    return existing;
  }
  const li = renderItem(n);
  if (fresh) li.classList.add("fresh");
  state.items.set(n.id, li);
  // Newest first: before the first item with a smaller id.
  const list = $("list");
  let before = null;
  for (const child of list.children) {
    if (Number(child.dataset.id) < n.id) {
      before = child;
      break;
    }
  }
  list.insertBefore(li, before);
  if (n.group) collapseGroup(n.group);
  return li;
}

/** One entry per group: its newest listed member, "Ana and 12 others ..."; the others hidden. */
function collapseGroup(group) {
  const members = [...state.items.values()].filter((li) => li._data && li._data.group === group);
  if (!members.length) return;
  members.sort((a, b) => b._data.id - a._data.id);
  const actors = [];
  for (const li of members) {
    const a = (li._data.data && typeof li._data.data.actor === "string" && li._data.data.actor) || li._data.sender;
    if (a && !actors.includes(a)) actors.push(a);
  }
  const count = Math.max(members.length, state.groupCounts.get(group) || 0);
  members.forEach((li, i) => {
    li.hidden = i > 0;
    const old = li.querySelector(".group-summary");
    if (old) old.remove();
  });
  if (count > 1 && actors.length) {
    const others = count - 1;
    const text = `${actors[0]} and ${others} other${others === 1 ? "" : "s"}`;
    members[0].querySelector(".body").prepend(el("p", { className: "group-summary", textContent: text }));
  }
}

/** Show the current version of a listed notification in its place; false when it is not listed. */
function replaceItem(n, { fresh = false } = {}) {
  const old = state.items.get(n.id);
  if (!old) return false;
  const li = renderItem(n);
  if (fresh || old.classList.contains("fresh")) li.classList.add("fresh");
  old.replaceWith(li);
  state.items.set(n.id, li);
  if (n.group) collapseGroup(n.group);
  return true;
}

function renderItem(n) {
  const li = el("li", { className: "notification", tabIndex: 0 });
  li.dataset.id = String(n.id);
  li.dataset.category = n.category;
  li._data = n;

  const dot = el("span", { className: "unread-dot" });
  dot.setAttribute("aria-hidden", "true");

  const meta = el("div", { className: "meta" });
  meta.append(chip(n.category));
  const time = el("time", { className: "time", dateTime: n.created_at, textContent: relativeTime(n.created_at) });
  time.title = new Date(n.created_at).toLocaleString();
  meta.append(time);
  if (n.sender) meta.append(el("span", { className: "sender", textContent: `from ${n.sender}` }));

  const body = el("div", { className: "body" });
  body.append(meta, el("p", { className: "title", textContent: n.title }));
  if (n.message) body.append(el("p", { className: "message", textContent: n.message }));
  const href = safeLink(n.link);
  if (href) {
    const a = el("a", { className: "link", href, textContent: "Open link", target: "_blank", rel: "noopener noreferrer" });
    a.title = href;
    body.append(a);
  }
  (Array.isArray(n.actions) ? n.actions : []).forEach((action, index) => {
    // Up to two buttons: the click is recorded (read, interacted_at), then a link opens.
    const button = el("button", { type: "button", className: "action", textContent: action.label });
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      api(`/api/notifications/${n.id}/interact/`, { method: "POST", body: { action: index } }).catch(reportError);
      const target = safeLink(action.url);
      if (target) window.open(target, "_blank", "noopener");
    });
    body.append(button);
  });
  li.append(dot, body);
  applyRead(li, Boolean(n.read_at));
  return li;
}

function applyRead(li, read) {
  li.classList.toggle("unread", !read);
  const title = li._data ? li._data.title : "";
  li.setAttribute("aria-label", `${read ? "" : "Unread: "}${title}`);
  if (read) li.removeAttribute("title");
  else li.title = "Click to mark read";
}

function setRead(id, read) {
  const li = state.items.get(id);
  if (li) applyRead(li, read);
}

function removeItem(id) {
  const li = state.items.get(id);
  if (li) li.remove();
  state.items.delete(id);
  if (li && li._data && li._data.group) collapseGroup(li._data.group);
}

function updateEmpty() {
  $("empty").hidden = state.items.size > 0;
}

function setNext(url) {
  // The API gives an absolute URL; keep only path and query so it stays on this origin.
  state.next = url ? new URL(url, location.href).pathname + new URL(url, location.href).search : null;
  $("load-older").hidden = !state.next;
}

async function loadOlder() {
  if (!state.next) return;
  const button = $("load-older");
  button.disabled = true;
  button.textContent = "Loading…";
  try {
    const page = await api(state.next);
    for (const n of page.results) upsert(n);
    setNext(page.next);
    updateEmpty();
    if (state.client) state.client.ack(page.results.filter((n) => n.state === "pending").map((n) => n.id));
  } catch (err) {
    toast({ title: "Could not load older notifications", message: err.message, category: "error" });
  } finally {
    button.disabled = false;
    button.textContent = "Load older";
  }
}

/** The first page again, from scratch (after a sync.reset: the journal could not replay our gap). */
async function reloadList(generation) {
  const page = await api(`/api/notifications/?page_size=${PAGE_SIZE}`);
  if (generation !== state.generation) return;
  clearList();
  for (const n of page.results) upsert(n);
  setNext(page.next);
  updateEmpty();
}

/** Bring the read state of the listed notifications up to date, and drop deleted ones. */
async function refreshListed(generation) {
  const size = Math.min(200, state.items.size);
  if (!size) return;
  const page = await api(`/api/notifications/?page_size=${size}`);
  if (generation !== state.generation || !page.results.length) return;
  const fresh = new Map(page.results.map((n) => [n.id, n]));
  const oldest = page.results[page.results.length - 1].id;
  for (const id of [...state.items.keys()]) {
    if (id < oldest) continue;
    const n = fresh.get(id);
    if (n) setRead(id, Boolean(n.read_at));
    else removeItem(id);
  }
  updateEmpty();
}

function markRead(ids) {
  const unread = ids.filter((id) => state.items.get(id)?.classList.contains("unread"));
  if (!unread.length) return;
  unread.forEach((id) => setRead(id, true));
  setBadge(Math.max(0, state.unread - unread.length)); // the server's count follows
  if (state.client && state.client.status === "open") {
    state.client.markRead(unread);
  } else {
    for (const id of unread) api(`/api/notifications/${id}/read/`, { method: "POST" }).catch(reportError);
  }
}

function markAllRead() {
  for (const li of state.items.values()) applyRead(li, true);
  setBadge(0);
  if (state.client && state.client.status === "open") state.client.markAllRead();
  else
    api("/api/notifications/read-all/", { method: "POST", body: {} })
      .then((data) => setBadge(data.unread))
      .catch(reportError);
}

// --- Header: badge and connection -----------------------------------------------------------

function setBadge(count) {
  state.unread = count;
  const badge = $("badge");
  badge.textContent = count > 99 ? "99+" : String(count);
  badge.dataset.count = String(count);
  badge.hidden = count === 0;
  $("bell").setAttribute("aria-label", `Notifications, ${count} unread`);
  document.title = count ? `(${count}) Inbox` : "Inbox";
}

const STATUS_TEXT = {
  connecting: "Connecting…",
  open: "Live",
  closed: "Offline",
  unauthorized: "Signed out",
};

function showStatus({ status, delay }) {
  const conn = $("conn");
  conn.dataset.status = status;
  let text = STATUS_TEXT[status] || status;
  if (status === "reconnecting") text = delay >= 1500 ? `Reconnecting in ${Math.round(delay / 1000)} s` : "Reconnecting…";
  $("conn-text").textContent = text;
  $("retry").hidden = status !== "reconnecting";
}

// --- Toasts ---------------------------------------------------------------------------------

function toast(n) {
  if (!n) return;
  if (n.id && state.prefs.mutedInApp(n.category)) return; // muted in-app: listed and marked, not toasted
  const box = $("toasts");
  if (n.id) box.querySelector(`.toast[data-id="${Number(n.id)}"]`)?.remove(); // shown again: one toast
  while (box.children.length >= MAX_TOASTS) box.firstElementChild.remove();
  const t = el("div", { className: "toast" });
  t.setAttribute("role", "status");
  fillToast(t, n);
  if (n.id) {
    t.dataset.id = String(n.id);
    t.addEventListener("click", () => {
      const li = state.items.get(n.id);
      if (li) li.scrollIntoView({ behavior: "smooth", block: "center" });
      t.remove();
    });
  }
  box.append(t);
  setTimeout(() => t.classList.add("leaving"), TOAST_MS);
  setTimeout(() => t.remove(), TOAST_MS + 400);
}

function fillToast(t, n) {
  const head = el("div", { className: "toast-head" });
  head.append(chip(n.category || "general"), el("strong", { textContent: n.title, title: n.title }));
  t.replaceChildren(head);
  if (n.message) t.append(el("p", { textContent: n.message }));
}

/** The toast of an edited notification, if one is showing, shows the new version. */
function updateToast(n) {
  const t = $("toasts").querySelector(`.toast[data-id="${Number(n.id)}"]`);
  if (t) fillToast(t, n);
}

function newestItemData() {
  const first = $("list").firstElementChild;
  return first ? first._data : null;
}

function reportError(err) {
  toast({ title: "Something went wrong", message: err && err.message ? err.message : String(err), category: "error" });
}

// --- Send form (service accounts) -----------------------------------------------------------

async function send(form) {
  const result = $("send-result");
  const body = {
    recipient: form.recipient.value.trim(),
    title: form.title.value.trim(),
    message: form.message.value,
  };
  if (form.category.value.trim()) body.category = form.category.value.trim();
  if (form.link.value.trim()) body.link = form.link.value.trim();
  result.className = "form-result";
  result.textContent = "Sending…";
  try {
    const n = await api("/api/notifications/", { method: "POST", body });
    result.classList.add("ok");
    result.textContent = `Sent #${n.id} to ${body.recipient}.`;
    form.title.value = "";
    form.message.value = "";
  } catch (err) {
    result.classList.add("error");
    result.textContent = err.message;
  }
}

// --- Helpers --------------------------------------------------------------------------------

function el(tag, props = {}) {
  return Object.assign(document.createElement(tag), props);
}

function chip(category) {
  const c = el("span", { className: "chip", textContent: category });
  c.style.setProperty("--hue", String(hue(category)));
  return c;
}

function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
  return (h * 7) % 360;
}

/**
 * The href of a notification's link: an http(s) URL, or a path of this site ("/orders/5", opened
 * relative to this page's origin). Anything else (javascript:, data:, "//other.host", a backslash
 * that browsers read as a slash) gives no link, whatever the server stored.
 */
function safeLink(link) {
  if (typeof link !== "string" || !link) return null;
  if (link.startsWith("/") && (link.startsWith("//") || /[\\\s\u0000-\u001f\u007f]/.test(link))) return null;
  if (!link.startsWith("/") && !/^https?:\/\//i.test(link)) return null;
  try {
    const u = new URL(link, location.href);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  } catch {
    return null;
  }
}

function relativeTime(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.max(1, Math.round(s / 60))} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  const d = new Date(t);
  const clock = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  const days = Math.round((startOfDay(new Date()) - startOfDay(d)) / 86400000);
  if (days <= 1) return `${days === 1 ? "Yesterday" : "Today"} ${clock}`;
  if (days < 6) return `${d.toLocaleDateString(undefined, { weekday: "short" })} ${clock}`;
  return d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

function startOfDay(d) {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

function refreshTimes() {
  for (const time of document.querySelectorAll("#list time")) time.textContent = relativeTime(time.dateTime);
}

// --- Wiring ---------------------------------------------------------------------------------

function init() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector("button[type=submit]");
    const error = $("signin-error");
    error.hidden = true;
    button.disabled = true;
    try {
      await signIn(form.username.value.trim(), form.password.value);
      form.password.value = "";
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401 ? "Wrong username or password." : err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  state.prefs = mountPreferences({ root: $("prefs"), api, getToken: async () => (await refreshAccess()) || state.access, list: $("list") });
  $("sign-out").addEventListener("click", () => signOut());
  $("mark-all").addEventListener("click", markAllRead);
  $("load-older").addEventListener("click", loadOlder);
  $("retry").addEventListener("click", () => state.client && state.client.reconnect());
  $("bell").addEventListener("click", () => {
    window.scrollTo({ top: 0, behavior: "smooth" });
    const first = $("list").querySelector(".notification.unread");
    if (first) first.focus({ preventScroll: true });
  });
  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send(event.currentTarget);
  });
  const list = $("list");
  list.addEventListener("click", (event) => {
    const li = event.target.closest(".notification");
    if (li) markRead([Number(li.dataset.id)]);
  });
  list.addEventListener("keydown", (event) => {
    const li = event.target.closest(".notification");
    if (li && (event.key === "Enter" || event.key === " ") && event.target === li) {
      event.preventDefault();
      markRead([Number(li.dataset.id)]);
    }
  });
  setInterval(refreshTimes, 30000);

  state.refresh = loadRefresh();
  if (state.refresh) {
    start().catch((err) => signOut(err.message));
  } else {
    showInbox(false);
  }
}

// For tests and the console: the live client of this page.
window.inboxApp = {
  get client() {
    return state.client;
  },
};

init();
