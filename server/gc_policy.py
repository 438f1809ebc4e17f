"""
The server process' garbage collector: full collections scan what is new, not every open socket.

Every open WebSocket keeps a few hundred objects alive (daphne's and autobahn's protocol, Twisted's
transport, the consumer and its tasks). Python starts a full collection whenever a quarter more
objects than the last one left have reached the oldest generation, and with thousands of sockets in
a process each full collection walks all of them, with everything stopped (bench/JOURNAL.md,
finding 25). Most of what reaches the oldest generation in between is short-lived (a broadcast's
notifications live a second or two) and is freed by reference counting anyway.

After each full collection, what survived it is frozen (``gc.freeze``): it stays alive as long as
it is referenced, but later collections do not walk it, so a full collection costs what is new
since. Cyclic garbage among frozen objects (the cycles of a socket that has since closed) is only
found by a full collection of everything, so the freeze is undone before one is needed: when the
frozen objects have grown by ``growth`` (SERVER["GC_FREEZE_GROWTH"]: a quarter more; doubled up to
1.0 while such collections find little garbage) since the last collection of everything, or
``full_every`` seconds (SERVER["GC_FULL_EVERY_SECONDS"]) have passed since it. Memory held by such
garbage is thus bounded, but not small when sockets come and go in rounds (bench/JOURNAL.md,
findings 25 and 29). A process whose sockets stay open pays a long pause only when its heap has
grown by that much, instead of every few seconds; one whose sockets come and go pays about as often
as before.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from .conf import server_setting

logger = logging.getLogger(__name__)


class FreezeSurvivors:
    # A collection of everything that found less than this share of what it walked to be garbage
    # doubles the growth allowed before the next one (up to MAX_GROWTH); one that found more brings
    # it back to ``growth``. A connect storm grows the frozen objects with live sockets only: walking
    # them again at every quarter of growth finds nothing and pauses the process for up to 0.8 s,
    # which then lands on whatever comes next (bench/JOURNAL.md, finding 29).
    LITTLE_GARBAGE = 0.05
    MAX_GROWTH = 1.0
    # Counting the frozen objects (gc.get_freeze_count) walks all of them: 10 ms for the 100,000
    # a server holds after startup in-process, 20-136 ms in a server as they grew to a million.
    # Full collections of what is new come every few seconds under load; counting at each was 2.9 %
    # of the servers' samples in a bulk send and stalled broadcasts (bench/JOURNAL.md, finding 36).
    # So the policy keeps a bound instead: the frozen objects still alive are at most those of the
    # last count plus all frozen since (each freeze adds the survivors of its collection, which
    # sit in the oldest generation then: a walk of those only). It counts only when that bound
    # passes the threshold, at most once per ``count_every`` seconds (what is frozen in between
    # and freed again, a broadcast's notifications in flight, keeps the bound above it), and thaws
    # only when the count does.
    COUNT_EVERY = 5.0

    def __init__(self, *, growth: float, full_every: float, count_every: float = COUNT_EVERY, clock=time.monotonic) -> None:
        self.base_growth = growth
        self.growth = growth
        self.full_every = full_every
        self.count_every = count_every
        self.thawed = 0  # objects the last thaw gave back to the collector
        self.clock = clock
        self.lock = threading.Lock()
        self.baseline = 0  # frozen objects right after the last collection of everything
        self.bound = 0  # frozen objects still alive, at most
        self.last_full = self.last_count = clock()
        self.scanning_all = True  # nothing is frozen yet: the next full collection sees everything
        self.freezes = 0
        self.full_scans = 0
        self.counts = 0  # walks of the frozen objects to count them

    def install(self) -> None:
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)

    def uninstall(self) -> None:
        if self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)
        gc.unfreeze()

    def callback(self, phase: str, info: dict) -> None:
        # Runs in whichever thread triggered the collection, after it; it must never raise.
        if phase != "stop" or info.get("generation") != 2:
            return
        try:
            self.after_full_collection(info.get("collected", 0))
        except Exception:  # pragma: no cover - a policy must not break the collector's caller
            logger.exception("gc policy failed")

    def after_full_collection(self, collected: int = 0) -> None:
        with self.lock:
            now = self.clock()
            if self.scanning_all:
                # This collection walked everything: what it left alive is the new baseline.
                if self.thawed:
                    little = collected < self.LITTLE_GARBAGE * self.thawed
                    self.growth = min(self.growth * 2, self.MAX_GROWTH) if little else self.base_growth
                self.scanning_all = False
                self.full_scans += 1
                self.last_full = self.last_count = now
                gc.freeze()
                self.baseline = self.bound = gc.get_freeze_count()
                self.freezes += 1
                return
            # Decided before this collection's survivors join them: what was frozen before and is
            # still alive. Short-lived objects frozen then (a broadcast's notifications in flight)
            # have been freed by reference counting since; dead cycles have not.
            limit = self.baseline * (1 + self.growth)
            period_over = now - self.last_full >= self.full_every
            if (self.bound > limit and now - self.last_count >= self.count_every) or period_over:
                frozen = gc.get_freeze_count()
                self.counts += 1
                self.last_count = now
                if frozen > limit or period_over:
                    # Let the next full collection walk everything again (and find dead cycles).
                    self.thawed = frozen
                    gc.unfreeze()
                    self.scanning_all = True
                    return
                self.bound = frozen
            self.bound += len(gc.get_objects(generation=2))
            gc.freeze()
            self.freezes += 1


_installed: FreezeSurvivors | None = None


def install(*, growth: float, full_every: float) -> FreezeSurvivors:
    """The process' policy, installed on the first call; later calls return it unchanged."""
    global _installed
    if _installed is None:
        _installed = FreezeSurvivors(growth=growth, full_every=full_every)
        _installed.install()
    return _installed


def install_from_settings() -> FreezeSurvivors | None:
    """The policy the SERVER settings ask for (GC_FREEZE), installed; None when it is off."""
    if not server_setting("GC_FREEZE"):
        return None
    return install(growth=server_setting("GC_FREEZE_GROWTH"), full_every=server_setting("GC_FULL_EVERY_SECONDS"))
