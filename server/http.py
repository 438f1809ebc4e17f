"""
Django's HTTP side under ASGI, one thread hop per request.

Every view of this service is synchronous (DRF, the ORM, the admin). Django's own ``ASGIHandler``
runs them with ``ThreadSensitiveContext``: a new thread per request, the request/finish signals and
``response.close`` each sent through ``sync_to_async``, and any sync-only middleware adapted hook by
hook: about half of a send's server CPU (bench/JOURNAL.md, finding 12).

``PooledASGIHandler`` reads the body on the event loop (a 413 for a body declared or grown over
Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``, before a byte is read when its ``Content-Length`` says so;
a 408 when it has not all arrived within SERVER['REQUEST_READ_TIMEOUT_SECONDS']), then runs the whole synchronous request, like a WSGI
server would, in a fixed pool of threads: signals, middleware, view, ``response.close()``. Threads
live on, so their database connections are handed back to the pool (or kept for ``CONN_MAX_AGE``)
as under WSGI. The pool also bounds how many requests hold a database connection at once; the rest
wait their turn in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core import signals
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, JsonResponse
from django.urls import set_script_prefix

from .conf import server_setting

logger = logging.getLogger(__name__)

_END = object()


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def declared_length(scope) -> int | None:
    """The request's ``Content-Length`` (None without one, or when it is not a number)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class PooledASGIHandler(ASGIHandler):
    def __init__(self, threads: int) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="server-http")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        timeout = server_setting("REQUEST_READ_TIMEOUT_SECONDS") or None
        try:
            if limit is not None and (declared_length(scope) or 0) > limit:
                raise _TooLarge  # before reading a byte of it
            async with asyncio.timeout(timeout):
                body_file = await self._read_body(receive, limit)
        except _Disconnected:
            return
        except _TooLarge:
            await self._refuse(send, 413, f"The request body is too large (limit {limit} bytes).")
            return
        except TimeoutError:
            await self._refuse(send, 408, f"The request body did not arrive within {timeout:g} seconds.")
            return
        loop = asyncio.get_running_loop()
        response = None
        try:
            response = await loop.run_in_executor(self.executor, self._respond_and_finish, scope, body_file)
            if response.streaming:
                await self._send_streaming(response, send, loop)
            else:
                await self._send_safely(response, send)
        finally:
            if response is None or response.streaming:
                await loop.run_in_executor(self.executor, self._finish, response, body_file)

    async def _refuse(self, send, status: int, detail: str) -> None:
        """Answer without reading (the rest of) the body, and close the connection."""
        response = JsonResponse({"detail": detail}, status=status)
        response["Connection"] = "close"
        await self._send_safely(response, send)

    def _respond_and_finish(self, scope, body_file):
        """
        The response; a non-streaming one is also closed here, in the same pool thread. Its bytes
        are already rendered, so closing it first (``request_finished``: database connections back
        to the pool) changes nothing for the client and saves a second thread hop per request.
        A streaming response is closed after its last block was sent.
        """
        response = self._respond(scope, body_file)
        if not response.streaming:
            self._finish(response, body_file)
        return response

    async def _read_body(self, receive, limit: int):
        """The whole body; ``body_file.size`` is its length."""
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                if chunk:
                    body_file.write(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            body_file.close()
            raise
        body_file.seek(0)
        body_file.size = size
        return body_file

    def _respond(self, scope, body_file):
        """The synchronous request, in a pool thread (the WSGIHandler's steps)."""
        if body_file.size and not any(name == b"content-length" for name, _ in scope["headers"]):
            # A chunked upload has no Content-Length, and Django reads no body without one.
            scope = {**scope, "headers": [*scope["headers"], (b"content-length", str(body_file.size).encode())]}
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            return error_response
        response = self.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        return response

    @staticmethod
    def _finish(response, body_file) -> None:
        try:
            if response is not None:
                response.close()  # request_finished: database connections back to the pool
            else:
                signals.request_finished.send(sender=PooledASGIHandler)
        finally:
            body_file.close()

    async def _send_safely(self, response, send) -> None:
        try:
            await self.send_response(response, send)
        except (OSError, RuntimeError) as exc:  # the client went away meanwhile
            logger.debug("response not sent: %s", exc)

    async def _send_streaming(self, response, send, loop) -> None:
        """Streamed bodies (static files) are read in the pool, a block at a time."""
        iterator = iter(response.streaming_content)
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": self._headers(response)})
            while True:
                chunk = await loop.run_in_executor(self.executor, next, iterator, _END)
                if chunk is _END:
                    break
                await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
            await send({"type": "http.response.body"})
        except (OSError, RuntimeError) as exc:
            logger.debug("streamed response cut: %s", exc)

    @staticmethod
    def _headers(response) -> list[tuple[bytes, bytes]]:
        headers = [
            (h.encode("ascii") if isinstance(h, str) else h, v.encode("latin1") if isinstance(v, str) else v)
            for h, v in response.items()
        ]
        headers += [(b"Set-Cookie", c.output(header="").encode("ascii").strip()) for c in response.cookies.values()]
        return headers

