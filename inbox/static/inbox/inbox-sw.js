// The service worker of Inbox's Web Push (issue 20). A push arrives only when no open tab acked the
// notification in time (inbox/fallback/): show it, ack it (POST to the push's ack_url, /push/ack/, with the
// signed token the push carries, as a socket would), tell open pages, and open its link on click.
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (_) {
    data = {};
  }
  const n = data.notification || {};
  event.waitUntil(
    (async () => {
      await self.registration.showNotification(n.title || "New notification", {
        body: n.message || "",
        tag: n.id ? `inbox-${n.id}` : undefined, // the same notification twice replaces, never stacks
        timestamp: Date.parse(n.created_at) || Date.now(),
        data: { id: n.id, link: n.link || "/" },
      });
      if (data.ack) {
        try {
          await fetch(new URL(data.ack_url || "/push/ack/", self.location.origin), {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ ack: data.ack }),
            credentials: "omit",
          });
        } catch (_) {
          // offline: the page acks it over its socket when it connects
        }
      }
      const pages = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const page of pages) page.postMessage({ type: "inbox.push", notification: n });
    })(),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const link = (event.notification.data && event.notification.data.link) || "/";
  const url = new URL(link, self.location.origin).href;
  event.waitUntil(
    (async () => {
      const pages = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const page of pages) {
        if (page.url === url && "focus" in page) return page.focus();
      }
      return self.clients.openWindow(url);
    })(),
  );
});
