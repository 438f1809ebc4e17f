"""
One write per response under uvicorn (httptools).

uvicorn writes a response's status line and headers to the socket as soon as the application sends
``http.response.start``, and its body when ``http.response.body`` follows: two ``send()`` calls,
and for the client two segments to wake up for, where one would do. Django sends the two messages
back to back for every response it has rendered (``ASGIHandler.send_response``).

``coalesce_response_head()`` holds the head until the first body message and writes both in one
call. The bytes are uvicorn's, built and checked by it as before. A HEAD response, whose body
messages write nothing, is not held. If the connection is closed before a body message came (the
application failed after the head, or the client left), the held head is written first and then
the connection closed, as uvicorn would have done it. Later body messages of a streamed response
are written as they come.
"""

from __future__ import annotations

import functools


class _HeldHead:
    """Stands in for a cycle's transport from its response start to its first write after that."""

    __slots__ = ("cycle", "transport", "head")

    def __init__(self, cycle, transport) -> None:
        self.cycle = cycle
        self.transport = transport
        self.head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.head is None:  # the head: keep it for the body
            self.head = data
            return
        self.cycle.transport = self.transport
        self.transport.write(self.head + data)

    def release(self) -> None:
        """Write the head if it is still held, and give the cycle its transport back."""
        self.cycle.transport = self.transport
        if self.head is not None and not self.transport.is_closing():
            self.transport.write(self.head)

    def close(self) -> None:
        self.release()
        self.transport.close()

    def __getattr__(self, name):  # is_closing(), get_extra_info() ...: the real transport's
        return getattr(self.transport, name)


def coalesce_response_head() -> bool:
    """Patch uvicorn's httptools protocol (if uvicorn is installed); True if patched."""
    try:
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    except ImportError:  # uvicorn or httptools not installed: nothing to patch
        return False
    send = RequestResponseCycle.send
    if getattr(send, "_inbox_coalesced", False):
        return True

    @functools.wraps(send)
    async def coalescing_send(self, message):
        if (
            message["type"] == "http.response.start"
            and not self.response_started
            and not self.disconnected
            and self.scope["method"] != "HEAD"  # its body messages write nothing: nothing to join it to
        ):
            held = _HeldHead(self, self.transport)
            self.transport = held
            try:
                await send(self, message)
            finally:
                if held.head is None:  # refused (a bad header) or nothing written: nothing held
                    self.transport = held.transport
            return
        await send(self, message)
        held = self.transport
        if type(held) is _HeldHead:  # a body message that wrote nothing: the head must not wait for more
            held.release()

    coalescing_send._inbox_coalesced = True
    RequestResponseCycle.send = coalescing_send
    return True
