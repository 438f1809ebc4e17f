"""Fixtures of the patch tests: a Twisted TCP connection over a socket pair."""

from __future__ import annotations

import socket

import pytest

from server.patches.twisted import write_through_tcp

from .support import RecordingReactor


@pytest.fixture
def connection():
    from twisted.internet import tcp

    write_through_tcp()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(2)
    reactor = RecordingReactor()
    conn = tcp.Connection(ours, protocol=None, reactor=reactor)
    conn.connected = True
    yield conn, theirs, reactor
    ours.close()
    theirs.close()
