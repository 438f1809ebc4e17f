"""
Rate limits for senders, readers and token requests (429 with Retry-After).

Rates come from REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'] (env INBOX_THROTTLE_SEND, _READ, _AUTH),
read at request time so that settings overrides apply. Counters live in the per-process
``throttle`` cache: a throttle never waits on the network or fails when Redis is down.
"""

import threading

from django.core.cache import caches
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from .throttle_cache import ObjectLocMemCache

# A client's history is read, trimmed, checked and extended as one step (see allow_request).
_history_lock = threading.Lock()


class _RatesFromSettings:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    @property
    def cache(self):
        return caches["throttle"]

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
    """Token requests, per client address."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
