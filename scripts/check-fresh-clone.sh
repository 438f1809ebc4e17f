#!/usr/bin/env bash
# Clone the committed tree, run the README's run command (`make run`), and check the service
# answers: health, the inbox page, a JWT for a demo user, a send by the demo service account, and
# the fallbacks' worker that `make run` starts beside daphne runs that send's Web Push task; then
# that stopping `make run` stops both. CHECK_WORKTREE=1 checks the working tree as it is instead
# (uncommitted edits, new and deleted files): the check before a commit.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
git clone --quiet "$src" "$dir/inbox"
if [ "${CHECK_WORKTREE:-0}" = 1 ]; then
  (cd "$src" && git ls-files -z --deleted) | (cd "$dir/inbox" && xargs -0 -r rm -f --)
  (cd "$src" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) \
    | tar -xf - -C "$dir/inbox"
fi
cd "$dir/inbox"
# Reuse the pip cache, not the venv: the install step itself is under test.
# A push fallback due 1 s after a send, so the worker has something to run within the check.
env -u DATABASE_URL -u REDIS_URL -u EMAIL_HOST PORT="$port" INBOX_PUSH_AFTER_SECONDS=1 make run >"$dir/run.log" 2>&1 &
pid=$!
cleanup() { pkill -TERM -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; sleep 1; rm -rf "$dir"; }
trap cleanup EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 300); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/run.log"; echo "make run exited"; exit 1; }
  sleep 1
done
curl -fsS "$base/healthz"; echo
grep -q "alice" "$dir/run.log" || { cat "$dir/run.log"; echo "demo credentials were not printed"; exit 1; }
# Read whole responses before grep -q: grep stops at its first match, and under pipefail the curl it
# cut off (exit 23, "Failed writing body") would fail the check on a page that loaded.
page="$(curl -fsS "$base/")" || { echo "the inbox page did not load"; exit 1; }
grep -qi "<html" <<<"$page" || { echo "the inbox page is not HTML"; exit 1; }
token() { curl -fsS -X POST "$base/api/auth/token/" -H 'content-type: application/json' -d "{\"username\":\"$1\",\"password\":\"$2\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access"])'; }
svc="$(token billing-service service-password)"
alice="$(token alice alice-password)"
curl -fsS -X POST "$base/api/notifications/" -H "authorization: Bearer $svc" -H 'content-type: application/json' \
  -d '{"recipient":"alice","title":"Fresh clone works"}' >/dev/null
unread="$(curl -fsS "$base/api/notifications/unread-count/" -H "authorization: Bearer $alice")" || { echo "the unread-count request failed"; exit 1; }
grep -q '"unread":1' <<<"$unread" || { echo "alice did not get the notification: $unread"; exit 1; }
for _ in $(seq 60); do
  grep -q "path=inbox.fallback.tasks.push_fallbacks state=SUCCESSFUL" "$dir/run.log" && break
  sleep 1
done
grep -q "path=inbox.fallback.tasks.push_fallbacks state=SUCCESSFUL" "$dir/run.log" \
  || { cat "$dir/run.log"; echo "the fallbacks' worker did not run the send's Web Push task"; exit 1; }
# Stopping make run (SIGTERM to its serve.py) stops daphne and the worker, both started from this clone.
pkill -TERM -P "$pid" 2>/dev/null || true
for _ in $(seq 30); do
  pgrep -f "$dir/inbox/.venv/bin/" >/dev/null || break
  sleep 1
done
if pgrep -f "$dir/inbox/.venv/bin/" >/dev/null; then
  ps -o pid,args -p "$(pgrep -d, -f "$dir/inbox/.venv/bin/")"; echo "make run left processes behind"; exit 1
fi
echo "fresh clone: make run serves $base, demo users sign in, a send reaches alice, the worker runs its fallback, and both stop together"
