"""
The throttles' store: Django's per-process memory cache, keeping the objects themselves.

DRF's rate throttles read a client's request history (a list of timestamps, up to the rate's number
of requests) from the cache and write it back on every request. ``LocMemCache`` pickles it both
ways: 44 us per request with 10 timestamps, 69 us with 250 (in-process; 2 % of a send's server CPU
in bench/, bench/JOURNAL.md, finding 38). Here the list itself is stored; ``inbox.api.throttles``
updates it in place under one lock, so two requests of one client cannot both read the same
history and both pass (which the pickled copies allowed).

Only for values that nobody mutates behind the cache's back, as the throttles guarantee.
"""

from __future__ import annotations

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache


class ObjectLocMemCache(LocMemCache):
    """``LocMemCache`` without pickling: ``get`` returns the very object ``set`` was given."""

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        with self._lock:
            if self._has_expired(key):
                self._set(key, value, timeout)
                return True
            return False

    def get(self, key, default=None, version=None):
        key = self.make_and_validate_key(key, version=version)
        with self._lock:
            if self._has_expired(key):
                self._delete(key)
                return default
            value = self._cache[key]
            self._cache.move_to_end(key, last=False)
        return value

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version=version)
        with self._lock:
            self._set(key, value, timeout)

    def incr(self, key, delta=1, version=None):
        key = self.make_and_validate_key(key, version=version)
        with self._lock:
            if self._has_expired(key):
                self._delete(key)
                raise ValueError("Key '%s' not found" % key)
            value = self._cache[key] + delta
            self._cache[key] = value
            self._cache.move_to_end(key, last=False)
        return value
