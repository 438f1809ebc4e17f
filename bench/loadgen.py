"""
The load generator: raw HTTP/1.1 keep-alive clients over asyncio streams for the REST calls, and
``websockets`` clients (compression off, no client pings) for the sockets. It runs on uvloop when
available. Each socket has one reader task that stamps every frame with its arrival time and hands
it to the current scenario's handler.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

# --- HTTP -----------------------------------------------------------------------------------------


class HttpError(Exception):
    pass


class HttpConn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int, host: str = "127.0.0.1", local_host: str | None = None) -> None:
        self.port = port
        self.host = host
        self.local_host = local_host
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.host_header = f"{host}:{port}".encode()

    async def open(self) -> None:
        kwargs = {"local_addr": (self.local_host, 0)} if self.local_host else {}
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**22, **kwargs)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, method: str, path: str, token: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        head = [
            f"{method} {path} HTTP/1.1".encode(),
            b"Host: " + self.host_header,
            b"Authorization: Bearer " + token.encode(),
            b"Accept: application/json",
        ]
        if body is not None:
            head.append(b"Content-Type: application/json")
            head.append(b"Content-Length: " + str(len(body)).encode())
        self.writer.write(b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.close()
            raise HttpError(f"connection lost: {exc}") from None
        status = int(raw[9:12])
        lower = raw.lower()
        length = None
        keep = b"connection: close" not in lower
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.index(b"\r\n", i + 2)
            length = int(lower[i + 17 : j])
            data = await self.reader.readexactly(length)
        elif b"transfer-encoding: chunked" in lower:
            chunks = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            data = b"".join(chunks)
        else:
            data = await self.reader.read()
            keep = False
        if not keep:
            self.close()
        return status, data


# --- WebSockets ---------------------------------------------------------------------------------

Handler = Callable[[int, bytes | str, float], None]


def _ignore(idx: int, raw, t: float) -> None:
    pass


@dataclass
class Sock:
    idx: int  # index of the user in the bench user list
    ws: object
    task: asyncio.Task | None = None
    sync: dict | None = None  # the sync.done frame received on connect


@dataclass
class ConnectStats:
    count: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


class Pool:
    """
    Authenticated sockets of users[0:n], spread round-robin over the server ports; one reader
    task per socket dispatches frames to ``handler(user_index, raw_frame, arrival_time)``.
    """

    def __init__(self, ports: Sequence[int], user_ids: Sequence[int], tokens: Sequence[str], source_hosts: int = 1) -> None:
        self.ports = list(ports)
        self.user_ids = list(user_ids)
        self.tokens = list(tokens)
        self.source_hosts = max(1, source_hosts)
        self.socks: dict[int, Sock] = {}
        self.handler: Handler = _ignore
        self.unexpected_closes = 0
        self.closing: set[int] = set()

    def url(self, idx: int, after: int | None) -> tuple[str, int]:
        port = self.ports[idx % len(self.ports)]
        q = f"?after={after}" if after is not None else ""
        return f"ws://127.0.0.1:{port}/ws/notifications/{q}", port

    async def open_one(self, idx: int, after: int | None, on_frame: Handler | None = None, timeout: float = 60.0) -> tuple[Sock, list, float]:
        """Connect user idx and read until sync.done. Returns the socket, the catch-up frames, and the time to sync.done."""
        url, port = self.url(idx, after)
        kwargs = {}
        if self.source_hosts > 1:
            # Past ~28k sockets one source address runs out of ephemeral ports.
            kwargs["local_addr"] = (f"127.0.0.{1 + idx % self.source_hosts}", 0)
        t0 = time.perf_counter()
        ws = await ws_connect(
            url,
            origin=f"http://127.0.0.1:{port}",
            subprotocols=["bearer", self.tokens[idx]],
            compression=None,
            proxy=None,
            ping_interval=None,
            open_timeout=timeout,
            close_timeout=2,
            max_size=2**22,
            max_queue=None,
            user_agent_header=None,
            **kwargs,
        )
        frames = []
        try:
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout)
                if on_frame is not None:
                    on_frame(idx, raw, time.time())
                frame = orjson.loads(raw)
                if frame.get("type") == "sync.done":
                    break
                frames.append(frame)
        except Exception:
            await ws.close()  # no sync.done in time, or closed before it: no socket left open behind the error
            raise
        elapsed = time.perf_counter() - t0
        sock = Sock(idx, ws, sync=frame)
        return sock, frames, elapsed

    def _start_reader(self, sock: Sock) -> None:
        sock.task = asyncio.get_running_loop().create_task(self._reader(sock))

    async def _reader(self, sock: Sock) -> None:
        ws = sock.ws
        try:
            async for raw in ws:
                self.handler(sock.idx, raw, time.time())
        except ConnectionClosed:
            pass
        except Exception:
            pass
        if sock.idx not in self.closing:
            self.unexpected_closes += 1

    async def ensure(self, n: int, after: int | None, concurrency: int = 64) -> ConnectStats:
        """Open sockets for users[0:n] that are not open yet."""
        stats = ConnectStats()
        todo = [i for i in range(n) if i not in self.socks]
        it = iter(todo)
        t0 = time.perf_counter()

        async def worker():
            for idx in it:
                try:
                    sock, _, elapsed = await self.open_one(idx, after)
                except Exception as exc:
                    stats.failed += 1
                    key = type(exc).__name__ + ": " + str(exc)[:80]
                    stats.errors[key] = stats.errors.get(key, 0) + 1
                    continue
                self.socks[idx] = sock
                self._start_reader(sock)
                stats.count += 1
                stats.latencies.append(elapsed)

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(todo))))))
        stats.seconds = time.perf_counter() - t0
        return stats

    def add(self, sock: Sock) -> None:
        self.socks[sock.idx] = sock
        self._start_reader(sock)

    async def close(self, indices: Sequence[int]) -> None:
        socks = [self.socks.pop(i) for i in list(indices) if i in self.socks]
        self.closing.update(s.idx for s in socks)

        async def close_one(s: Sock):
            try:
                await s.ws.close()
            except Exception:
                pass
            if s.task is not None:
                try:
                    await asyncio.wait_for(s.task, 5)
                except Exception:
                    s.task.cancel()

        for start in range(0, len(socks), 500):
            await asyncio.gather(*(close_one(s) for s in socks[start : start + 500]))
        self.closing.difference_update(s.idx for s in socks)

    async def shrink(self, n: int) -> None:
        await self.close([i for i in self.socks if i >= n])

    async def close_all(self) -> None:
        await self.close(list(self.socks))


# --- Statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary_ms(values: Sequence[float]) -> dict:
    """p50/p99/max of durations given in seconds, in milliseconds."""
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


async def run_requests(
    conns: Sequence[HttpConn],
    count: int,
    make: Callable[[int], tuple[str, str, str, bytes | None]],
    answered: Callable[[int, int, float], None] | None = None,
) -> tuple[list[float], dict[int, int], list[str], float]:
    """
    ``count`` requests, one in flight per connection (closed loop). ``make(i)`` returns
    (method, path, token, body) and is called right when request i starts, so a body can carry
    its own start time; ``answered(i, status, t)``, if given, is called with the wall-clock time
    the answer to request i was read. Returns the latencies, the status counts, some error texts
    and the wall time.
    """
    counter = itertools.count()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []

    async def worker(conn: HttpConn):
        while True:
            i = next(counter)
            if i >= count:
                return
            t0 = time.perf_counter()
            method, path, token, body = make(i)
            try:
                status, data = await conn.request(method, path, token, body)
            except Exception as exc:
                statuses[0] = statuses.get(0, 0) + 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - t0)
            if answered is not None:
                answered(i, status, time.time())
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 300 and len(errors) < 5:
                errors.append(f"{status}: {data[:200]!r}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return latencies, statuses, errors, time.perf_counter() - t0


def run_async(coro):
    """Run ``coro`` to its end on uvloop (about twice the throughput of asyncio's loop), or on asyncio's without it."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
