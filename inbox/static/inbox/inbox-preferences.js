/**
 * The preferences panel of the inbox page (issue 20): per category, each channel (in-app, Web Push,
 * e-mail) on or off and a mute for a while; quiet hours in a time zone; "Enable push". It reads and
 * writes GET/PUT /api/preferences/ through the page's own `api` function (inbox-app.js).
 *
 * "Muted in-app" (in_app off, or a mute running): the notification is still stored and listed,
 * marked "muted", and never toasted; the unread badge still counts it (docs/fallbacks.md).
 * Critical categories (security) are shown always on: the server refuses to turn them off.
 *
 *   const prefs = mountPreferences({ root, api, getToken, list });
 *   await prefs.load();
 *   prefs.mutedInApp("marketing");   // true while that category is muted or its in-app is off
 */

import { enablePush, pushSupported } from "./inbox-push.js";

const CHANNELS = [
  ["in_app", "In-app"],
  ["web_push", "Web Push"],
  ["email", "E-mail"],
];
const MUTES = [
  ["", "Not muted"],
  ["3600", "1 hour"],
  ["28800", "8 hours"],
  ["86400", "1 day"],
  ["604800", "1 week"],
];

function h(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function timeZones() {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf("timeZone");
  } catch {
    zones = [];
  }
  return zones.includes("UTC") ? zones : ["UTC", ...zones];
}

function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

export function mountPreferences({ root, api, getToken, list }) {
  let prefs = null; // the last GET/PUT answer
  const status = h("span", { className: "form-result prefs-status", role: "status" });
  const pushButton = h("button", { type: "button", className: "secondary", id: "push-enable", textContent: "Enable push" });
  const pushStatus = h("span", { className: "form-result", id: "push-status", role: "status" });
  const zone = h("select", { name: "time_zone", id: "prefs-time-zone" });
  for (const z of timeZones()) zone.append(h("option", { value: z, textContent: z }));
  const quietOn = h("input", { type: "checkbox", name: "quiet_on", id: "prefs-quiet-on" });
  const quietStart = h("input", { type: "time", name: "start", id: "prefs-quiet-start", value: "22:00" });
  const quietEnd = h("input", { type: "time", name: "end", id: "prefs-quiet-end", value: "07:00" });
  const profile = h(
    "form",
    { className: "prefs-profile", id: "prefs-profile" },
    h("label", {}, "Time zone ", zone),
    h("label", { className: "inline" }, quietOn, " Quiet hours from "),
    quietStart,
    h("span", { textContent: " to " }),
    quietEnd,
    h("button", { type: "submit", className: "secondary", textContent: "Save" }),
  );
  const rows = h("tbody", { id: "prefs-categories" });
  const table = h(
    "table",
    { className: "prefs-table" },
    h("thead", {}, h("tr", {}, h("th", { textContent: "Category" }), ...CHANNELS.map(([, label]) => h("th", { textContent: label })), h("th", { textContent: "Mute" }))),
    rows,
  );
  const addInput = h("input", { name: "category", placeholder: "category", pattern: "[a-zA-Z0-9_\\-]{1,50}", id: "prefs-add-category" });
  const add = h("form", { className: "prefs-add" }, addInput, h("button", { type: "submit", className: "secondary", textContent: "Add" }));
  const extra = new Set(); // categories added by hand, shown until the page reloads

  root.replaceChildren(
    h("summary", { textContent: "Preferences" }),
    h(
      "div",
      { className: "prefs-body" },
      h("p", { className: "prefs-push" }, pushButton, " ", pushStatus),
      h("p", { className: "muted", textContent: "Web Push and e-mail reach you only when no open tab took a notification; quiet hours hold them back, in-app still shows." }),
      profile,
      table,
      add,
      h("p", { className: "muted", textContent: "Muted in-app: still listed (marked muted), no toast; the badge still counts it." }),
      status,
    ),
  );
  root.hidden = true; // until the preferences are loaded

  function say(text, ok = true) {
    status.className = `form-result prefs-status ${ok ? "ok" : "error"}`;
    status.textContent = text;
  }

  function isCritical(category) {
    return Boolean(prefs && prefs.critical_categories.includes(category));
  }

  function choice(category) {
    return (prefs && prefs.categories[category]) || { in_app: true, web_push: true, email: true, muted_until: null };
  }

  function mutedInApp(category) {
    if (!prefs || isCritical(category)) return false;
    const c = prefs.categories[category];
    if (!c) return false;
    return !c.in_app || (c.muted_until !== null && Date.parse(c.muted_until) > Date.now());
  }

  function listedCategories() {
    return list ? Array.from(list.querySelectorAll(".notification[data-category]"), (li) => li.dataset.category) : [];
  }

  function renderRows() {
    const names = new Set(["general", ...Object.keys(prefs.categories), ...prefs.critical_categories, ...listedCategories(), ...extra]);
    rows.replaceChildren();
    for (const name of [...names].sort()) {
      const c = choice(name);
      const critical = isCritical(name);
      const cells = CHANNELS.map(([channel, label]) => {
        const box = h("input", { type: "checkbox", checked: critical || Boolean(c[channel]), disabled: critical });
        box.dataset.category = name;
        box.dataset.channel = channel;
        box.setAttribute("aria-label", `${label} for ${name}`);
        return h("td", {}, box);
      });
      const mute = h("select", { disabled: critical });
      mute.dataset.category = name;
      mute.dataset.mute = "";
      mute.setAttribute("aria-label", `Mute ${name}`);
      const until = c.muted_until && Date.parse(c.muted_until) > Date.now() ? new Date(c.muted_until) : null;
      if (until) mute.append(h("option", { value: "keep", textContent: `Until ${until.toLocaleString()}`, selected: true }));
      for (const [seconds, label] of MUTES) mute.append(h("option", { value: seconds, textContent: until && !seconds ? "Unmute" : label }));
      const label = h("th", { scope: "row", textContent: name });
      if (critical) label.append(h("span", { className: "muted", textContent: " (always on)" }));
      const tr = h("tr", {}, label, ...cells, h("td", {}, mute));
      tr.dataset.category = name;
      rows.append(tr);
    }
  }

  function renderProfile() {
    const z = prefs.time_zone || "UTC";
    if (![...zone.options].some((o) => o.value === z)) zone.append(h("option", { value: z, textContent: z }));
    zone.value = z;
    quietOn.checked = Boolean(prefs.quiet_hours);
    if (prefs.quiet_hours) {
      quietStart.value = prefs.quiet_hours.start;
      quietEnd.value = prefs.quiet_hours.end;
    }
  }

  /** Listed notifications of a category muted in-app carry data-muted and a "muted" mark. */
  function markList() {
    if (!list) return;
    for (const li of list.querySelectorAll(".notification")) markItem(li);
  }

  function markItem(li) {
    const muted = mutedInApp(li.dataset.category);
    const mark = li.querySelector(".muted-mark");
    if (muted) {
      li.dataset.muted = "in-app";
      if (!mark) li.querySelector(".meta")?.append(h("span", { className: "muted-mark", textContent: "muted", title: "Muted in-app: listed, not toasted" }));
    } else {
      delete li.dataset.muted;
      mark?.remove();
    }
  }

  function show(answer) {
    prefs = answer;
    renderProfile();
    renderRows();
    markList();
  }

  async function save(document, done) {
    try {
      show(await api("/api/preferences/", { method: "PUT", body: document }));
      say(done);
    } catch (err) {
      say(err.message, false);
      if (prefs) show(prefs); // back to what is stored
    }
  }

  rows.addEventListener("change", (event) => {
    const target = event.target;
    const category = target.dataset.category;
    if (!category) return;
    if (target.dataset.channel) {
      const channel = target.dataset.channel;
      save({ categories: { [category]: { [channel]: target.checked } } }, `${category}: ${channel.replace("_", " ")} ${target.checked ? "on" : "off"}.`);
    } else if ("mute" in target.dataset && target.value !== "keep") {
      const until = target.value ? new Date(Date.now() + Number(target.value) * 1000).toISOString() : null;
      save({ categories: { [category]: { muted_until: until } } }, until ? `${category} muted.` : `${category} unmuted.`);
    }
  });

  profile.addEventListener("submit", (event) => {
    event.preventDefault();
    const quiet = quietOn.checked ? { start: quietStart.value, end: quietEnd.value } : null;
    save({ time_zone: zone.value, quiet_hours: quiet }, "Saved.");
  });

  add.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = addInput.value.trim();
    if (!name || !addInput.checkValidity()) return;
    extra.add(name);
    addInput.value = "";
    renderRows();
  });

  root.addEventListener("toggle", () => root.open && prefs && renderRows()); // categories listed since

  pushButton.hidden = !pushSupported();
  pushButton.addEventListener("click", async () => {
    pushButton.disabled = true;
    pushStatus.className = "form-result";
    pushStatus.textContent = "…";
    try {
      const result = await enablePush({ token: await getToken() });
      if (!result.configured) pushStatus.textContent = "Web Push is not configured on this server.";
      else if (result.permission !== "granted") pushStatus.textContent = `Notifications are ${result.permission} in this browser.`;
      else pushStatus.textContent = result.subscribed ? "Push is on for this browser." : "The server did not store the subscription.";
      pushStatus.classList.add(result.subscribed ? "ok" : "error");
    } catch (err) {
      pushStatus.textContent = err && err.message ? err.message : String(err);
      pushStatus.classList.add("error");
    } finally {
      pushButton.disabled = false;
    }
  });

  if (list) new MutationObserver((changes) => {
    for (const change of changes) for (const node of change.addedNodes) if (node.nodeType === 1 && node.matches(".notification")) markItem(node);
  }).observe(list, { childList: true });

  return {
    /** Load the signed-in person's preferences and show the panel. */
    async load() {
      const stored = await api("/api/preferences/");
      extra.clear();
      show(stored);
      // Someone who never chose a zone is offered the browser's (saved with the quiet hours).
      const own = browserZone();
      if (stored.time_zone === "UTC" && !stored.quiet_hours && [...zone.options].some((o) => o.value === own)) zone.value = own;
      root.hidden = false;
      return stored;
    },
    /** Signed out: nothing muted, the panel hidden and closed. */
    reset() {
      prefs = null;
      root.hidden = true;
      root.open = false;
      say("");
      markList();
    },
    mutedInApp,
    get current() {
      return prefs;
    },
  };
}
