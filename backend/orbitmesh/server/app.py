"""HTTP routing on the standard library's ``ThreadingHTTPServer`` (one thread per connection).

No web framework: the API is seven routes, the Blender add-on's client is ``urllib``, and
an extra dependency would have to be bundled into every studio install. Every answer is
JSON (errors: ``{"error", "message", "fix"}``) except file downloads and the event stream.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import shutil
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from orbitmesh import __version__
from orbitmesh.errors import InputError, OrbitMeshError
from orbitmesh.jobs import TERMINAL
from orbitmesh.server import security
from orbitmesh.server.api_errors import ApiError, bad_request, not_found
from orbitmesh.server.health import health_info
from orbitmesh.server.jobs import JobManager, Runner, build_request, pop_commercial_only, run_generate
from orbitmesh.server.multipart import DRAIN_MAX, parse_content_type, parse_form, read_body
from orbitmesh.server.uploads import parse_settings_json, validate_image
from orbitmesh.settings import Settings

log = logging.getLogger("orbitmesh.server")

JSON_LIMIT = 1 << 20
CONTENT_TYPES = {".glb": "model/gltf-binary", ".gltf": "model/gltf+json", ".obj": "text/plain",
                 ".json": "application/json", ".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allow_remote: bool = False
    max_upload_bytes: int = 50 << 20
    default_model: str | None = None
    keepalive_s: float = 10.0
    socket_timeout_s: float = 60.0


class OrbitMeshServer(ThreadingHTTPServer):
    daemon_threads = True  # an open event stream must not keep the process alive at exit
    # Loopback clients are few; a small backlog is fine, and reuse avoids TIME_WAIT bind errors.
    allow_reuse_address = True

    def __init__(self, config: ServerConfig, settings: Settings) -> None:
        security.check_bind(config.host, allow_remote=config.allow_remote, token=config.token)
        self.config = config
        self.settings = settings
        self.manager: JobManager | None = None  # attached by make_server once the port is ours
        self.loopback_only = security.is_loopback(config.host)
        if ":" in config.host:  # an IPv6 literal such as ::1
            self.address_family = socket.AF_INET6
        try:
            super().__init__((config.host.strip("[]"), config.port), Handler)
        except OSError as exc:
            raise InputError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                             fix="another program (maybe another orbitmesh serve) uses that port: stop it, "
                                 "or pick another with --port (0 = any free port)") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def serve_forever(self, poll_interval: float = 0.25) -> None:
        self._serving = True
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving = False

    def close(self) -> None:
        """Stop accepting, stop the worker (the running job is cancelled), close the socket."""
        if getattr(self, "_serving", False):
            self.shutdown()  # blocks until serve_forever returns, so only when it runs
        if self.manager is not None:
            self.manager.close()
        self.server_close()


def make_server(settings: Settings, config: ServerConfig | None = None, *, runner: Runner = run_generate,
                jobs_root: str | Path | None = None) -> OrbitMeshServer:
    """Check the bind address, list existing jobs, start the worker and bind (not yet serving)."""
    config = config or ServerConfig()
    server = OrbitMeshServer(config, settings)  # bind first: a taken port must not touch the jobs folder
    try:
        server.manager = JobManager(jobs_root or settings.output_dir, settings, default_model=config.default_model,
                                    runner=runner)
    except BaseException:
        server.server_close()
        raise
    return server


class Handler(BaseHTTPRequestHandler):
    server: OrbitMeshServer
    server_version = f"OrbitMesh/{__version__}"
    protocol_version = "HTTP/1.0"  # one request per connection: simple, and SSE ends with the close

    def setup(self) -> None:
        self.timeout = self.server.config.socket_timeout_s  # a stalled client cannot pin a thread
        super().setup()

    # ----- dispatch -----------------------------------------------------------------------

    def _handle_command(self) -> None:
        self._dispatch(self.command)

    # Every verb goes through one router (unsupported ones get a JSON 405 there).
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle_command

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's own errors (bad request line, unknown method, ...) as JSON too."""
        self.close_connection = True
        payload = {"error": f"http_{code}", "message": message or self.responses.get(code, ("error",))[0],
                   "fix": explain or "send a well-formed HTTP/1.x request"}
        try:
            body = _dumps(payload)
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        try:
            security.check_origin(self.headers, loopback_only=self.server.loopback_only)
            security.check_token(self.headers.get("Authorization"), self.server.config.token)
            self._route(method, security.path_segments(self.path))
        except ApiError as exc:
            self._send_error(exc.status, exc.to_dict())
        except OrbitMeshError as exc:
            self._send_error(400, {"error": "bad_request", "message": exc.message, "fix": exc.fix})
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away; jobs do not depend on it
        except Exception as exc:
            log.exception("request %s %s failed", method, self.path)
            self._send_error(500, {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}",
                                   "fix": "this is a bug: please report it with the server log"})

    def _route(self, method: str, seg: list[str]) -> None:
        routes: dict[tuple, Any] = {
            ("health",): {"GET": self._health},
            ("jobs",): {"GET": self._list_jobs, "POST": self._create_job},
        }
        if len(seg) >= 2 and seg[0] == "jobs":
            job_id = security.check_name(seg[1], "job id")
            rest = tuple(seg[2:])
            if rest == ():
                routes[tuple(seg)] = {"GET": lambda: self._send_json(200, self._job(job_id))}
            elif rest == ("events",):
                routes[tuple(seg)] = {"GET": lambda: self._events(job_id)}
            elif rest == ("cancel",):
                routes[tuple(seg)] = {"POST": lambda: self._cancel(job_id)}
            elif len(rest) == 2 and rest[0] == "files":
                routes[tuple(seg)] = {"GET": lambda: self._file(job_id, rest[1])}
        handlers = routes.get(tuple(seg))
        if handlers is None:
            raise not_found(f"no such endpoint {self.path.split('?')[0]!r}",
                            fix="see the API in the README: /health, /jobs, /jobs/{id}[/events|/cancel|/files/{name}]")
        if method not in handlers:
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on this endpoint",
                           fix=f"use {' or '.join(handlers)}")
        handlers[method]()

    # ----- endpoints ----------------------------------------------------------------------

    def _health(self) -> None:
        info = health_info(self.server.settings, self.server.config.default_model)
        info.update(queue_length=self.server.manager.queue_length, busy=self.server.manager.busy)
        self._send_json(200, info)

    def _list_jobs(self) -> None:
        manager = self.server.manager
        self._send_json(200, {"jobs": [manager.snapshot(job)[1] for job in manager.list()]})

    def _job(self, job_id: str) -> dict:
        manager = self.server.manager
        return manager.snapshot(manager.get(job_id))[1]

    def _create_job(self) -> None:
        mime, _ = parse_content_type(self.headers.get("Content-Type"))
        config = self.server.config
        if mime == "multipart/form-data":
            body = self._read_body(config.max_upload_bytes)
            parts = parse_form(body, self.headers.get("Content-Type"), allowed=("image", "settings"))
            if "image" not in parts:
                raise bad_request("the form has no 'image' field",
                                  fix="send the image file in a form field named 'image'", code="missing_field")
            image = parts["image"]
            security.check_upload_filename(image.filename)
            values = parse_settings_json(parts["settings"].data) if "settings" in parts else {}
            commercial_only = pop_commercial_only(values)
            request = build_request(values, default_model=config.default_model)
            ext, _size = validate_image(image.data)
            self.server.manager.check_model(request, commercial_only=commercial_only)
            name = Path(image.filename).stem if image.filename else "image"
            job = self.server.manager.submit(request, name=name, upload=image.data, upload_ext=ext,
                                             commercial_only=commercial_only)
        elif mime == "application/json":
            values = parse_settings_json(self._read_body(min(JSON_LIMIT, config.max_upload_bytes)), "the body")
            prompt = values.pop("prompt", None)
            if not isinstance(prompt, str) or not prompt.strip():
                raise bad_request("a JSON job needs a non-empty 'prompt' text",
                                  fix='send {"prompt": "a wooden chair", ...settings}, or upload an image '
                                      "as multipart/form-data", code="invalid_settings")
            commercial_only = pop_commercial_only(values)
            request = build_request(values, prompt=prompt, default_model=config.default_model)
            self.server.manager.check_model(request, commercial_only=commercial_only)
            job = self.server.manager.submit(request, name=prompt, commercial_only=commercial_only)
        else:
            raise ApiError(415, "unsupported_media_type", f"unsupported Content-Type {mime or '(none)'!r}",
                           fix="send multipart/form-data with an 'image' file, or application/json with a 'prompt'")
        self._send_json(202, {"id": job.id, "status": job.status}, headers={"Location": f"/jobs/{job.id}"})

    def _cancel(self, job_id: str) -> None:
        manager = self.server.manager
        self._send_json(200, manager.snapshot(manager.cancel(job_id))[1])

    def _file(self, job_id: str, name: str) -> None:
        security.check_name(name, "file name")
        job = self.server.manager.get(job_id)
        files = self.server.manager.files(job)
        if name not in files:
            raise not_found(f"job {job_id} has no file {name!r}", fix=f"ask for one of {sorted(files)}")
        path = files[name].resolve()
        if not path.is_relative_to(job.folder.path.resolve()):  # defence in depth against symlinks
            raise not_found(f"job {job_id} has no file {name!r}")
        ctype = (CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
                 or "application/octet-stream")
        with path.open("rb") as fh:
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Disposition", f'attachment; filename="{name}"')
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            shutil.copyfileobj(fh, self.wfile)

    def _events(self, job_id: str) -> None:
        """Server-sent events: the job object on every change, a comment every keepalive_s."""
        manager = self.server.manager
        job = manager.get(job_id)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        seen = None
        while True:
            version, data = manager.snapshot(job)
            if version != seen:
                self.wfile.write(b"data: " + _dumps(data) + b"\n\n")
                self.wfile.flush()
                seen = version
                if data["status"] in TERMINAL:
                    return
            if not manager.wait_change(job, seen, timeout=self.server.config.keepalive_s):
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()

    # ----- responses --------------------------------------------------------------------------

    def _read_body(self, limit: int) -> bytes:
        self._body_read = True
        return read_body(self.rfile, self.headers, limit)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = _dumps(obj)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="orbitmesh"')
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, status: int, payload: dict) -> None:
        if not self._body_read:  # read an unread body first, so the client gets the answer, not a reset
            self._drain()
        try:
            self._send_json(status, payload)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass

    def _drain(self) -> None:
        self._body_read = True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= DRAIN_MAX:
            try:
                while length > 0:
                    data = self.rfile.read(min(1 << 16, length))
                    if not data:
                        return
                    length -= len(data)
            except OSError:
                return

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=str).encode("utf-8")
