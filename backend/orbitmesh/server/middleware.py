"""Checks every request passes before any route: request target, Host, Origin, token, safe path, body pace.

A pure ASGI middleware (no response buffering, so event streams and downloads pass straight through). Each
refusal is the API's JSON error: an absolute-form target (``GET http://evil.com/health``) is a 400, a missing,
repeated or (on loopback) foreign ``Host`` and a foreign or ``null`` ``Origin`` are 403, a wrong token 401, a
traversal in any encoding 400. The path handed on is the decoded, checked one, without a trailing slash.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from orbitmesh.server import security
from orbitmesh.server.api_errors import ApiError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024


class RequestChecks:
    def __init__(self, app: ASGIApp, *, token: str | None, loopback_only: bool, body_timeout_s: float) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            path = self.check(scope)
        except ApiError as exc:
            await send_json(send, exc.status, exc.to_dict(), head=scope["method"] == "HEAD")
            return
        scope = dict(scope, path=path, raw_path=path.encode("utf-8", "surrogateescape"))
        await self.app(scope, self._paced(receive), send)

    def check(self, scope: Scope) -> str:
        """The checked, decoded path; ApiError for anything refused."""
        raw = scope.get("raw_path") or scope["path"].encode()
        if not raw.startswith(b"/"):
            raise ApiError(400, "bad_request", "the request target must be a path such as /jobs",
                           fix="send the path only (origin-form), not a full URL: this is no proxy")
        headers = [(key.lower(), value) for key, value in scope["headers"]]
        if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            raise ApiError(431, "headers_too_large", f"the request headers are over {MAX_HEADERS} headers or "
                           f"{MAX_HEADER_BYTES // 1024} KB", fix="send fewer and shorter headers")
        hosts = [value for key, value in headers if key == b"host"]
        if any(not host.strip() for host in hosts):
            raise ApiError(403, "forbidden_host", "the Host header is empty",
                           fix="send a Host header such as 127.0.0.1:<port>")
        if len(hosts) > 1:
            raise ApiError(403, "forbidden_host", "the request has more than one Host header",
                           fix="send exactly one Host header")
        if not hosts and scope.get("http_version") != "1.0":
            raise ApiError(403, "forbidden_host", "the request has no Host header",
                           fix="send a Host header such as 127.0.0.1:<port>")
        origins = [value for key, value in headers if key == b"origin"]
        if len(origins) > 1:
            raise ApiError(403, "forbidden_origin", "the request has more than one Origin header",
                           fix="call the API from a script or the Blender add-on, not from a browser page")
        found = {"Host": _text(hosts[0]) if hosts else None, "Origin": _text(origins[0]) if origins else None}
        security.check_origin(found, loopback_only=self.loopback_only)
        authorization = [value for key, value in headers if key == b"authorization"]
        security.check_token(_text(authorization[0]) if authorization else None, self.token)
        segments = security.path_segments(raw.decode("latin-1"))
        return "/" + "/".join(segments)

    def _paced(self, receive: Receive) -> Receive:
        """``receive`` with a deadline per body chunk: a client that stalls mid-upload gets a 408."""

        async def paced() -> Message:
            try:
                return await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(408, "request_timeout", f"the request body stalled for {self.body_timeout_s:.0f} s",
                               fix="send the whole body without pauses") from None

        return paced


async def send_json(send: Send, status: int, payload: dict, *, head: bool = False,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store")]
    if status == 401:
        base.append((b"www-authenticate", b'Bearer realm="orbitmesh"'))
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _text(value: bytes) -> str:
    return value.decode("latin-1")
