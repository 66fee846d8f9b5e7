"""The listening side: the bound socket, uvicorn serving the app on it, and connection limits.

uvicorn parses HTTP with h11 on one asyncio loop, so an open event stream or a slow client costs a coroutine,
not a thread. What uvicorn leaves open is closed here: a connection that has not sent its request headers within
``header_timeout_s`` is dropped (slowloris), and a connection over ``max_connections`` is answered 503 in JSON
and closed (uvicorn's own limit answers in plain text and counts only at the request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
import threading
from typing import TYPE_CHECKING, Iterator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from orbitmesh.errors import InputError
from orbitmesh.server import security

if TYPE_CHECKING:
    from orbitmesh.executors.base import Executor
    from orbitmesh.server.config import ServerConfig
    from orbitmesh.server.jobs import JobManager
    from orbitmesh.settings import Settings

log = logging.getLogger("orbitmesh.server")


def _json_response(status: int, reason: str, payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


BUSY = _json_response(503, "Service Unavailable", {
    "error": "too_many_connections", "message": "the server has too many open connections",
    "fix": "close idle connections or event streams and retry; the operator can raise serve --max-connections"})


def protocol_class(max_connections: int, header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a connection cap and a deadline for the first request's headers."""

    class LimitedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(BUSY)
                transport.close()
                return
            self._header_deadline = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _headers_too_slow(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                log.info("closing a connection that sent no request within %.0f s", header_timeout_s)
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            deadline = getattr(self, "_header_deadline", None)
            if self.cycle is not None and deadline is not None:  # the first request arrived in time
                deadline.cancel()
                self._header_deadline = None

        def send_400_response(self, msg: str) -> None:
            """h11 refused the request before the app: answer in JSON too (403 for a missing or repeated Host,
            the check the app would have made)."""
            error = sys.exc_info()[1]  # called inside uvicorn's `except h11.RemoteProtocolError`
            detail = str(error) if error is not None else msg
            if "Host" in detail:
                answer = _json_response(403, "Forbidden", {"error": "forbidden_host", "message": detail,
                                                           "fix": "send exactly one Host header"})
            else:
                answer = _json_response(400, "Bad Request", {"error": "bad_request",
                                                             "message": f"malformed HTTP request: {detail}",
                                                             "fix": "send a well-formed HTTP/1.1 request"})
            self.transport.write(answer)
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            deadline = getattr(self, "_header_deadline", None)
            if deadline is not None:
                deadline.cancel()
            super().connection_lost(exc)

    return LimitedH11Protocol


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the CLI owns SIGINT/SIGTERM (a stop keeps the running job queued)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OrbitMeshServer:
    """The bound socket and the uvicorn server of one ``orbitmesh serve``; ``serve_forever`` blocks,
    ``close`` (any thread) stops serving, stops the job manager and releases the port."""

    def __init__(self, config: ServerConfig, settings: Settings) -> None:
        security.check_bind(config.host, allow_remote=config.allow_remote, token=config.token)
        self.config = config
        self.settings = settings
        self.manager: JobManager | None = None  # attached by make_server once the port is ours
        self.executor: Executor | None = None  # a worker pool the server owns (closed with it)
        self.loopback_only = security.is_loopback(config.host)
        self.socket = _bind(config.host, config.port)
        self._uvicorn: _Uvicorn | None = None
        self._served = threading.Event()  # set when serve_forever has returned (or never will run)
        self._served.set()
        self._closed = False

    def attach(self, manager: JobManager) -> None:
        from orbitmesh.server.app import create_app

        self.manager = manager
        app = create_app(self)
        uv_config = uvicorn.Config(
            app, http=protocol_class(self.config.max_connections, self.config.header_timeout_s), ws="none",
            lifespan="on", log_config=None, access_log=self.config.access_log, server_header=False,
            timeout_keep_alive=int(self.config.keepalive_s), timeout_graceful_shutdown=3,
            h11_max_incomplete_event_size=64 * 1024)
        self._uvicorn = _Uvicorn(uv_config)

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` or :meth:`close` (from another thread or a signal handler)."""
        if self._uvicorn is None or self._closed:
            return
        self._served.clear()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._served.set()

    def stop(self) -> None:
        """Ask serve_forever to return (safe from a signal handler: it only sets a flag)."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    def close(self, timeout: float = 30.0) -> None:
        """Stop serving, stop the job manager (the running job stays queued for the next start), free the port."""
        self._closed = True
        self.stop()
        self._served.wait(timeout)
        if self.manager is not None:
            self.manager.close()
        if self.executor is not None:
            self.executor.close()
        self.socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # an IPv6 literal such as ::1
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # no TIME_WAIT bind errors after a restart
    sock.set_inheritable(False)  # a child process (a forked helper) must never hold our port
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         fix="another program (maybe another orbitmesh serve) uses that port: stop it, "
                             "or pick another with --port (0 = any free port)") from None
    return sock
