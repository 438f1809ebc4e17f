"""Twisted's TCP connections send a write at once when nothing waits to be sent (server/patches/twisted.py)."""

from __future__ import annotations

from .support import read_exactly


def test_a_write_with_nothing_waiting_is_sent_at_once_without_asking_the_reactor(connection):
    conn, peer, reactor = connection
    conn.write(b"frame one")
    conn.write(b"frame two")
    assert read_exactly(peer, 18) == b"frame oneframe two"
    assert reactor.writers == []
    assert conn._tempDataLen == 0


def test_what_the_kernel_does_not_take_is_buffered_and_later_writes_queue_behind_it(connection):
    conn, peer, reactor = connection
    big = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers hold
    conn.write(big)
    assert reactor.writers == [conn]  # the rest waits for the socket to be writable
    conn.write(b"after")  # must not overtake the buffered bytes
    assert reactor.writers == [conn]
    received = bytearray()
    while len(received) < len(big) + 5:
        conn.doWrite()  # what the reactor does when the socket is writable
        received += peer.recv(1 << 20)
    assert bytes(received) == big + b"after"
    assert reactor.writers == []


def test_a_write_to_a_lost_connection_goes_through_twisteds_buffered_path(connection):
    conn, peer, reactor = connection
    peer.close()
    conn.write(b"x" * 100)  # may still be taken by the kernel
    for _ in range(3):
        conn.write(b"y" * 1_000_000)
        if reactor.writers:
            break
    # The error is left to Twisted's doWrite, which reports the lost connection.
    assert reactor.writers == [conn]
    assert conn.doWrite() is not None
