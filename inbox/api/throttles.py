"""
Rate limits for senders, readers and token requests (429 with Retry-After).

Rates come from REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'] (env INBOX_THROTTLE_SEND, _READ, _AUTH),
read at request time so that settings overrides apply. Counters live in the per-process
``throttle`` cache: a throttle never waits on the network or fails when Redis is down.
"""

from django.core.cache import caches
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class _RatesFromSettings:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    @property
    def cache(self):
        return caches["throttle"]


class SendThrottle(_RatesFromSettings, UserRateThrottle):
    scope = "send"


class ReadThrottle(_RatesFromSettings, UserRateThrottle):
    scope = "read"


class AuthThrottle(_RatesFromSettings, AnonRateThrottle):
    """Token requests, per client address."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
