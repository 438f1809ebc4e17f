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
