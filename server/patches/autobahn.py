"""Patches of autobahn 26.10: debug-log labels (server/patches)."""

from __future__ import annotations

from . import patch


class _LazyLabel:
    """A log argument formatted only when a message is written (str() or format())."""

    __slots__ = ("_format", "_args", "_kwargs")

    def __init__(self, format_, args, kwargs) -> None:
        self._format = format_
        self._args = args
        self._kwargs = kwargs

    def __str__(self) -> str:
        return self._format(*self._args, **self._kwargs)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    __repr__ = __str__


@patch(
    "autobahn", ">=26.10,<26.11",
    "autobahn colours a debug-log label for every frame it sends or reads, logged or not "
    "(bench/JOURNAL.md, finding 31)",
)
def lazy_autobahn_log_labels() -> None:
    """
    Build autobahn's coloured log labels only for messages that are written.

    autobahn logs every frame it sends (``WebSocketProtocol.sendData``) and every read
    (``dataReceived``) at debug level, and builds the arguments first: ``hltype(...)`` and
    ``hlval(...)``, each coloured with ``click.style``. With debug logging off the logger drops
    them unread. Here the names those modules call return a label that formats itself when a
    message is actually written, with the same text.
    """
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol

    for module in (protocol, twisted_websocket):
        for name in ("hltype", "hlval"):
            eager = getattr(module, name)
            setattr(module, name, lambda *args, _eager=eager, **kwargs: _LazyLabel(_eager, args, kwargs))


@patch(
    "autobahn", ">=26.10,<26.11",
    "autobahn pretty-prints each new socket's options for a debug log, logged or not: 4.5 % of a "
    "connect's server CPU (bench/JOURNAL.md, finding 75)",
)
def lazy_autobahn_options_dump() -> None:
    """
    Pretty-print autobahn's per-socket options only for a debug message that is written.

    ``WebSocketProtocol._connectionMade`` copies the factory's options onto every new connection
    and logs them at debug level with ``pformat(...)`` of the whole list, built before the logger
    drops it (``startHandshake``, a client's, does the same with its transport details). Here the
    module's ``pformat`` returns a label that formats itself when written. ``Timings.__str__``,
    the module's one other caller, must return a ``str``: it gets the real ``pformat``.
    """
    from pprint import pformat

    from autobahn.websocket import protocol

    protocol.pformat = lambda *args, **kwargs: _LazyLabel(pformat, args, kwargs)
    protocol.Timings.__str__ = lambda self: pformat(self._timings)
