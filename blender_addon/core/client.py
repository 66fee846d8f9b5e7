"""HTTP client for ``orbitmesh serve`` (standard library only: nothing extra to install in Blender).

Every failure becomes a :class:`ServerError` with a message and a fix the panel can show:
the server's own ``{"error", "message", "fix"}`` answers, an unreachable server, a timeout
or an answer that is not JSON.
"""

from __future__ import annotations

import json
import mimetypes
import os
import secrets
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .errors import AddonError

DEFAULT_URL = "http://127.0.0.1:8765"


class ServerError(AddonError):
    """A request to the server failed. ``code`` is the server's error code (or a local one), ``status``
    the HTTP status when the server answered."""

    def __init__(self, message: str, *, fix: str | None = None, code: str = "error", status: int | None = None):
        super().__init__(message, fix)
        self.code = code
        self.status = status


class ServerUnreachable(ServerError):
    """Nothing answers at the URL (not started, wrong port, crashed)."""


def normalize_url(url: str) -> str:
    """'127.0.0.1:8765/' -> 'http://127.0.0.1:8765'; raises ServerError for anything unusable."""
    url = (url or "").strip()
    if url and "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServerError(f"the server URL {url!r} is not an http:// address",
                          fix=f"set it in the add-on preferences, e.g. {DEFAULT_URL}", code="bad_url")
    try:
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        raise ServerError(f"the server URL {url!r} has an invalid port",
                          fix=f"use a port number, e.g. {DEFAULT_URL}", code="bad_url") from None
    return url.rstrip("/")


def encode_multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request. ``files``: name -> (filename, data, type)."""
    boundary = "orbitmesh-" + secrets.token_hex(12)
    out = bytearray()
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
        out += value.encode("utf-8") + b"\r\n"
    for name, (filename, data, ctype) in files.items():
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{safe}\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def model_url_path(name: str, action: str = "") -> str:
    """``/models/<name>[/<action>]`` with each segment of ``name`` percent-encoded but its ``/`` kept (hub ids)."""
    path = "/models/" + "/".join(urllib.parse.quote(seg, safe="") for seg in name.split("/"))
    return path + (f"/{action}" if action else "")


class Client:
    """One server. Methods return parsed JSON (dicts) or raise :class:`ServerError`."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 10.0, token: str | None = None) -> None:
        self.base_url = normalize_url(base_url)
        self.timeout = timeout
        self.token = token or None
        # Loopback must not go through an HTTP proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ----- plumbing -------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                 timeout: float | None = None):
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        try:
            return self._opener.open(req, timeout=self.timeout if timeout is None else timeout)
        except urllib.error.HTTPError as exc:
            raise self._error_from_http(exc) from None
        except (socket.timeout, TimeoutError):
            raise ServerError(f"the server at {self.base_url} did not answer within "
                              f"{self.timeout if timeout is None else timeout:.0f} s",
                              fix="check that it is not overloaded, or restart it", code="timeout") from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnreachable(f"cannot reach the OrbitMesh server at {self.base_url} ({reason})",
                                    fix="start it (Start Server in the OrbitMesh panel or add-on preferences, "
                                        "or `orbitmesh serve`) or correct the server URL",
                                    code="unreachable") from None

    @staticmethod
    def _error_from_http(exc: urllib.error.HTTPError) -> ServerError:
        try:
            data = json.loads(exc.read().decode("utf-8"))
        except Exception:
            data = {}
        if not isinstance(data, dict):
            data = {}
        message = data.get("message") or f"the server answered HTTP {exc.code} {exc.reason}"
        return ServerError(str(message), fix=data.get("fix"), code=str(data.get("error") or exc.code),
                           status=exc.code)

    def _json(self, method: str, path: str, **kw) -> Any:
        with self._request(method, path, **kw) as resp:
            raw = resp.read()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ServerError(f"the server at {self.base_url} answered {path} with something that is not JSON",
                              fix="check that the URL points at `orbitmesh serve`", code="bad_answer") from None

    # ----- API ------------------------------------------------------------------------------

    def health(self, timeout: float | None = None) -> dict:
        return self._json("GET", "/health", timeout=timeout)

    def submit_image(self, image_path: str | os.PathLike, settings: dict[str, Any]) -> dict:
        path = Path(image_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ServerError(f"cannot read the image {path}: {exc.strerror or exc}", fix="check the path",
                              code="bad_image") from None
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body, content_type = encode_multipart({"settings": json.dumps(settings)}, {"image": (path.name, data, ctype)})
        return self._json("POST", "/jobs", body=body, content_type=content_type, timeout=max(self.timeout, 60.0))

    def submit_prompt(self, prompt: str, settings: dict[str, Any]) -> dict:
        body = json.dumps({"prompt": prompt, **settings}).encode("utf-8")
        return self._json("POST", "/jobs", body=body, content_type="application/json")

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{urllib.parse.quote(job_id, safe='')}")

    def jobs(self) -> list[dict]:
        return self._json("GET", "/jobs").get("jobs", [])

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/jobs/{urllib.parse.quote(job_id, safe='')}/cancel", body=b"")

    def models(self, timeout: float | None = None) -> list[dict]:
        """``GET /models``: every catalogue model with kind, licence, size and whether it is available."""
        return self._json("GET", "/models", timeout=timeout).get("models", [])

    def download_model(self, name: str) -> dict:
        """``POST /models/{name}/download``: starts a download job ({"id", "status"}; follow it as a job)."""
        return self._json("POST", model_url_path(name, "download"), body=b"")

    def remove_model(self, name: str, timeout: float | None = None) -> dict:
        """``POST /models/{name}/remove``: {"name", "removed", "freed_bytes"}."""
        return self._json("POST", model_url_path(name, "remove"), body=b"", timeout=timeout)

    def download(self, job_id: str, name: str, dest: str | os.PathLike) -> Path:
        """Fetch one of the job's files to ``dest`` atomically (temp file + rename)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        path = f"/jobs/{urllib.parse.quote(job_id, safe='')}/files/{urllib.parse.quote(name, safe='')}"
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, self._request("GET", path, timeout=max(self.timeout, 60.0)) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest
