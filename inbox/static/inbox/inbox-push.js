// Web Push for a page (issue 20): register Inbox's service worker, ask permission, subscribe with the
// server's VAPID key and store the subscription (POST /api/push-subscriptions/). No dependencies.
//
//   import { enablePush, disablePush } from "/static/inbox/inbox-push.js";
//   const result = await enablePush({ token: accessToken });  // {supported, configured, permission, subscribed}
//   await disablePush({ token: accessToken });
"use strict";

const API = "/api/push-subscriptions/";
const WORKER = "/static/inbox/inbox-sw.js";

function keyBytes(base64url) {
  const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (base64url.length % 4)) % 4));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

function headers(token) {
  return { Authorization: `Bearer ${token}`, "Content-Type": "application/json", Accept: "application/json" };
}

// A page outside the worker's scope (it lives under /static/inbox/) never sees serviceWorker.ready:
// wait for this registration's worker to be active instead (pushManager.subscribe needs one).
async function activated(registration) {
  const worker = registration.installing || registration.waiting || registration.active;
  if (worker && worker.state !== "activated") {
    await new Promise((resolve) => worker.addEventListener("statechange", () => worker.state === "activated" && resolve()));
  }
  return registration;
}

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

export async function enablePush({ token, api = API, worker = WORKER } = {}) {
  if (!pushSupported()) return { supported: false };
  const info = await (await fetch(api, { headers: headers(token) })).json();
  if (!info.vapid_public_key) return { supported: true, configured: false };
  const registration = await activated(await navigator.serviceWorker.register(worker));
  const permission = Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
  if (permission !== "granted") return { supported: true, configured: true, permission, subscribed: false };
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(info.vapid_public_key),
    });
  }
  const stored = await fetch(api, { method: "POST", headers: headers(token), body: JSON.stringify(subscription.toJSON()) });
  return { supported: true, configured: true, permission, subscribed: stored.ok, endpoint: subscription.endpoint };
}

export async function disablePush({ token, api = API, worker = WORKER } = {}) {
  if (!pushSupported()) return false;
  const registration = await navigator.serviceWorker.getRegistration(worker);
  const subscription = registration && (await registration.pushManager.getSubscription());
  if (!subscription) return false;
  await fetch(api, { method: "DELETE", headers: headers(token), body: JSON.stringify({ endpoint: subscription.endpoint }) });
  return subscription.unsubscribe();
}
