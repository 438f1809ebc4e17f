"""Patches of Twisted 26.10: TCP writes (server/patches)."""

from __future__ import annotations

from . import patch


@patch(
    "Twisted", ">=26.10,<26.11",
    "Twisted sends every write on a later turn of the loop, two epoll_ctl calls and a callback per WebSocket "
    "frame (bench/JOURNAL.md, finding 21)",
)
def write_through_tcp() -> None:
    """
    Send a write at once when nothing is waiting to be sent, as asyncio's own transports do.

    Twisted's ``FileDescriptor.write`` buffers every write and registers the socket with the
    reactor's selector; the bytes go out on a later turn of the loop, when the socket is reported
    writable, and the socket is unregistered again. Here a write to a plain TCP connection with an
    empty buffer is sent right away; what the kernel does not take (or a write to a connection with
    bytes still waiting, or any error) goes through Twisted's buffered write as before, so the order
    of bytes and Twisted's handling of errors and producers are unchanged.
    """
    from twisted.internet import tcp

    buffered_write = tcp.Connection.write

    def write(self, data):
        if (
            type(data) is bytes
            and data
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
            and not self.producerPaused
        ):
            sent = self.writeSomeData(data)
            if type(sent) is int and sent > 0:
                if sent == len(data):
                    return
                data = data[sent:]
        buffered_write(self, data)

    tcp.Connection.write = write


def unsent_bytes(transport) -> int:
    """
    The bytes written to ``transport`` that Twisted still holds, not yet taken by the kernel.

    Reads ``FileDescriptor``'s buffer as Twisted 26.10 keeps it (``dataBuffer`` from ``offset``, plus
    ``_tempDataLen`` bytes of later writes); a wrapping transport (TLS) is looked through to the
    TCP connection under it. 0 for a transport without such a buffer. Used by the patches that
    bound what a client may make the server hold (server/patches/daphne.py), which name this
    Twisted range in their ``also``.
    """
    for _ in range(4):
        try:
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        except AttributeError:
            transport = getattr(transport, "transport", None)
            if transport is None:
                return 0
    return 0
