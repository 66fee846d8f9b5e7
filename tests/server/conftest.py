"""Helpers shared by the server tests: a server on a background thread, one HTTP request to it."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable

import pytest


def _start_server(settings, config, **kwargs):
    from orbitmesh.server.app import make_server

    server = make_server(settings, config, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def start_server() -> Callable:
    """start_server(settings, ServerConfig(...), runner=...) -> the server (``.url``), serving on a daemon
    thread; the caller closes it (``server.close()``)."""
    return _start_server


def _http_request(url: str, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                  timeout: float = 30) -> tuple[int, dict | bytes, http.client.HTTPResponse]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.getheader("Content-Type") == "application/json":
        data = json.loads(data)
    return resp.status, data, resp


@pytest.fixture(scope="session")
def http_request() -> Callable[..., tuple[int, dict | bytes, http.client.HTTPResponse]]:
    """http_request(url, method, path, headers=None, body=None, timeout=30) -> (status, body, response): the
    body decoded when it is JSON, bytes otherwise."""
    return _http_request
