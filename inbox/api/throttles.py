"""
Rate limits for senders, readers and password checks (429 with Retry-After).

Rates come from REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'] (env INBOX_THROTTLE_SEND, _READ, _AUTH),
read at request time so that settings overrides apply. Counters live in the per-process
``throttle`` cache: a throttle never waits on the network or fails when Redis is down.

Requests that check a password (``POST /api/auth/token/`` and ``POST /admin/login/``) share the
``auth`` rate per client address (``client_address``), and at most ``INBOX["PASSWORD_CHECKS"]`` of them
hash a password at once per process (``password_check_slot``): a PBKDF2 hash is a third of a second
of a core, and 24 wrong logins in parallel had held every HTTP thread for seconds.
"""

import hashlib
import ipaddress
import logging
import threading
from contextlib import contextmanager

from inbox.conf import inbox_setting
from django.conf import settings
from django.core.cache import caches
from rest_framework.exceptions import Throttled
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from .throttle_cache import ObjectLocMemCache

logger = logging.getLogger(__name__)

# A client's history is read, trimmed, checked and extended as one step (see allow_request).
_history_lock = threading.Lock()

# The identity of every request whose client address cannot be known (see client_address).
UNTRUSTED_FORWARDED = "forwarded-untrusted"
_warned_untrusted = False


def _normalized(entry: str) -> str:
    """An address as one key: ``::FFFF:10.0.0.1`` and ``[::ffff:a00:1]:443`` alike; anything else hashed."""
    text = entry.strip()
    candidates = [text]
    if text.startswith("[") and "]" in text:
        candidates.append(text[1 : text.index("]")])  # [v6]:port
    elif text.count(":") == 1:
        candidates.append(text.split(":", 1)[0])  # v4:port (some proxies append the port)
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        mapped = getattr(address, "ipv4_mapped", None)
        return str(mapped or address)
    # Not an address (``unknown``, a proxy's obfuscated name): a bounded key all the same.
    return "unparsed-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def client_address(request) -> str:
    """
    The address that per-address limits count, whatever the server did with proxy headers.

    ``INBOX_NUM_PROXIES`` (REST_FRAMEWORK['NUM_PROXIES']) = N > 0: N proxies each append the address
    they saw to ``X-Forwarded-For``, so the N-th entry from the right is the one the outermost proxy
    saw, the client; entries left of it are the client's own words. Read from the raw header, so
    that it does not matter whether daphne or uvicorn ``--proxy-headers`` rewrote the socket address
    (daphne takes the leftmost entry, which the client writes).

    N = 0 (no trusted proxy): the socket peer (``REMOTE_ADDR``), unless the server took that from the
    header, which is then the client's to write: all such requests count as one client, so that a
    forged header buys no fresh budget (a warning in the log says to set INBOX_NUM_PROXIES).
    """
    meta = request.META
    remote = meta.get("REMOTE_ADDR") or ""
    xff = meta.get("HTTP_X_FORWARDED_FOR")
    if xff is None:
        return _normalized(remote)
    entries = [e.strip() for e in xff.split(",")]
    num_proxies = api_settings.NUM_PROXIES or 0
    if num_proxies > 0:
        return _normalized(entries[-min(num_proxies, len(entries))])
    if remote and remote.strip() in entries:
        global _warned_untrusted
        if not _warned_untrusted:
            _warned_untrusted = True
            logger.warning(
                "The server took the client address from X-Forwarded-For, but INBOX_NUM_PROXIES is 0: the "
                "header is the client's to write, so every request carrying it shares one rate limit. Behind "
                "N proxies that append to it, set INBOX_NUM_PROXIES=N (README, Deployment)."
            )
        return UNTRUSTED_FORWARDED
    return _normalized(remote)


class _RatesFromSettings:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    @property
    def cache(self):
        # The service's own cache of histories (settings/api.py); a host without one: its default cache.
        return caches["throttle"] if "throttle" in settings.CACHES else caches["default"]

    def get_ident(self, request):
        return client_address(request)

    def allow_request(self, request, view):
        """
        DRF's check. With the object cache (inbox/api/throttle_cache.py) the history it reads is the
        stored list itself, which DRF trims and extends in place: one lock makes that a single step
        for concurrent requests, and a refused request keeps its own copy for ``wait()``.
        """
        if not isinstance(self.cache, ObjectLocMemCache):
            return super().allow_request(request, view)
        with _history_lock:
            allowed = super().allow_request(request, view)
            if not allowed:
                self.history = list(self.history)
        return allowed


class SendThrottle(_RatesFromSettings, UserRateThrottle):
    scope = "send"


class ReadThrottle(_RatesFromSettings, UserRateThrottle):
    scope = "read"


class AuthThrottle(_RatesFromSettings, AnonRateThrottle):
    """Password checks (token requests, admin sign-ins), per client address (``client_address``)."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


# --- Password checks at once ------------------------------------------------------------------


class PasswordChecksBusy(Throttled):
    """Every password-check slot of this process is taken: a 429 at once instead of a queue."""

    default_detail = "Too many sign-ins are being checked right now; retry in a second."

    def __init__(self):
        super().__init__(wait=1)


_slots_lock = threading.Lock()
_slots: tuple[int, threading.BoundedSemaphore] | None = None


def _password_slots() -> threading.BoundedSemaphore:
    global _slots
    size = max(1, int(inbox_setting("PASSWORD_CHECKS")))
    current = _slots
    if current is None or current[0] != size:
        with _slots_lock:
            if _slots is None or _slots[0] != size:
                _slots = (size, threading.BoundedSemaphore(size))
            current = _slots
    return current[1]


@contextmanager
def password_check_slot():
    """
    Hold one of the process' ``INBOX["PASSWORD_CHECKS"]`` slots while a password is checked, or raise
    ``PasswordChecksBusy`` (429, Retry-After: 1) without waiting: a flood of wrong logins then costs
    at most that many cores' worth of hashing, and the HTTP threads stay free for the API.
    """
    slots = _password_slots()
    if not slots.acquire(blocking=False):
        raise PasswordChecksBusy()
    try:
        yield
    finally:
        slots.release()
