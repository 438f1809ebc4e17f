"""Helpers of the patch tests: a reactor that records writers, reading a socket whole."""

from __future__ import annotations


class RecordingReactor:
    """What a Twisted connection asks of its reactor: here, only whether it waits to write."""

    def __init__(self) -> None:
        self.writers: list = []

    def addWriter(self, writer) -> None:
        if writer not in self.writers:  # as Twisted's reactors do
            self.writers.append(writer)

    def removeWriter(self, writer) -> None:
        self.writers.remove(writer)

    def addReader(self, reader) -> None:
        pass

    def removeReader(self, reader) -> None:
        pass


def read_exactly(sock, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        got += sock.recv(size - len(got))
    return bytes(got)
