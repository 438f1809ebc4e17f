"""What the server patches share: the close codes, and the protocol-ping budget (server/patches)."""

from __future__ import annotations

import time

#: RFC 6455 "policy violation": the close code of the limits on what a client may make a server hold
#: (realtime/protocol.py mirrors it).
POLICY_VIOLATION = 1008
#: RFC 6455 "service restart", and its reason: what a stopping server (daphne, uvicorn) tells every open socket.
SERVICE_RESTART = 1012
SERVICE_RESTART_REASON = "server restart"


class PingBudget:
    """
    A token bucket for one socket's protocol-level pings: ``burst`` tokens, refilled at ``rate`` a
    second. ``take(n)`` takes a token for each of ``n`` pings, or none and is False when fewer are
    left. ``rate`` or ``burst`` 0: no limit.
    """

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, time.monotonic()

    def take(self, n: int = 1) -> bool:
        if not (self.rate and self.burst):
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def describe(self) -> str:
        return f"protocol pings over {self.rate:g}/s (bursts of {self.burst:g})"
