"""
Every patch of a third party's internals, in one place (Sentry's ``src/sentry/monkey/``).

Each patch is one named function in the module of the library it patches (daphne.py, twisted.py,
autobahn.py, uvicorn.py), declared with ``@patch(library, versions, reason)``: the distribution it patches, the
release range whose internals it was read against, and why it exists. ``apply()`` runs from
``ServerConfig.ready()`` and applies each patch at most once per process. A library installed
outside a patch's range is left alone, with a WARNING naming the patch, the installed version and
the range: its internals may have moved, so read them again and widen the range (or drop the
patch if upstream fixed it). A library that is not installed is skipped quietly.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata

logger = logging.getLogger(__name__)


def _release(version: str) -> tuple[int, ...]:
    """``"26.10.2"`` -> ``(26, 10, 2)``; a component's leading digits only (``"0rc1"`` -> 0)."""
    numbers = []
    for part in version.split("."):
        digits = re.match(r"\d*", part).group()
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def in_range(version: str, versions: str) -> bool:
    """Whether ``version`` is inside ``versions``, a ``">=4.2,<4.3"`` pair (lower included, upper not)."""
    bounds = [bound.strip() for bound in versions.split(",")]
    if len(bounds) != 2 or not bounds[0].startswith(">=") or not bounds[1].startswith("<") or bounds[1].startswith("<="):
        raise ValueError(f"a version range is '>=A,<B', not {versions!r}")
    lower, upper = bounds
    return _release(lower[2:]) <= _release(version) < _release(upper[1:])


@dataclass(frozen=True, eq=False)
class Patch:
    """
    One patch: ``function`` changes ``library``'s internals, as read in the ``versions`` range.

    ``also`` names further (library, range) pairs whose private state the patch relies on. Calling
    the patch applies it (once), as ``apply([patch])`` does. ``function`` returns False when it has
    nothing to patch in this process yet; it is then tried again by the next ``apply()``.
    """

    name: str
    library: str
    versions: str
    reason: str
    function: Callable[[], bool | None] = field(repr=False)
    also: tuple[tuple[str, str], ...] = ()

    def __call__(self) -> bool:
        apply([self])
        return _outcomes.get(self) == "applied"


def patch(library: str, versions: str, reason: str, *, also: dict[str, str] | None = None):
    """Declare the decorated function as a :class:`Patch` of ``library`` (a distribution name)."""

    def declare(function: Callable[[], bool | None]) -> Patch:
        return Patch(function.__name__, library, versions, reason, function, tuple((also or {}).items()))

    return declare


# What happened to each patch in this process: "applied", or why it was left alone for good.
_outcomes: dict[Patch, str] = {}
_lock = threading.Lock()


def _check(p: Patch) -> str | None:
    """None when every library of ``p`` is installed inside its range, else why it is skipped."""
    for library, versions in ((p.library, p.versions), *p.also):
        try:
            installed = metadata.version(library)
        except metadata.PackageNotFoundError:
            logger.debug("patch %s not applied: %s is not installed", p.name, library)
            return "not installed"
        if not in_range(installed, versions):
            logger.warning(
                "patch %s not applied: %s %s is installed, the patch was written for %s %s (%s)",
                p.name, library, installed, library, versions, p.reason,
            )
            return "out of range"
    return None


def apply(patches: Iterable[Patch] | None = None) -> list[Patch]:
    """Apply each patch (default: all of :data:`PATCHES`) not applied yet; the list of those applied now."""
    applied_now = []
    with _lock:
        for p in PATCHES if patches is None else patches:
            if p in _outcomes:
                continue
            skipped = _check(p)
            if skipped:
                _outcomes[p] = skipped
                continue
            if p.function() is False:
                logger.debug("patch %s: nothing to patch in this process yet", p.name)
                continue
            _outcomes[p] = "applied"
            applied_now.append(p)
            logger.debug("patch %s applied (%s %s)", p.name, p.library, p.versions)
    return applied_now


def applied() -> list[Patch]:
    """The patches applied in this process, in the order they were."""
    return [p for p, outcome in _outcomes.items() if outcome == "applied"]


from . import autobahn, daphne, twisted, uvicorn  # noqa: E402  (their @patch needs the names above)

#: Every patch, in the order apply() applies them.
PATCHES: tuple[Patch, ...] = (
    daphne.allow_standard_close_codes,
    daphne.exit_promptly_after_shutdown,
    daphne.close_sockets_on_shutdown,
    daphne.skip_twisted_form_parsing,
    twisted.write_through_tcp,
    autobahn.lazy_autobahn_log_labels,
    autobahn.lazy_autobahn_options_dump,
    daphne.direct_text_frames,
    daphne.close_websockets_that_do_not_read,
    daphne.limit_websocket_pings,
    daphne.bound_request_bodies,
    uvicorn.forget_uvicorn_handshakes,  # before the next one, whose send writes the frames itself
    uvicorn.close_uvicorn_websockets_that_do_not_read,
    uvicorn.limit_uvicorn_websocket_pings,
    uvicorn.say_server_restart_on_uvicorn_shutdown,
    uvicorn.bound_uvicorn_request_heads,
)
