"""The HTTP API on FastAPI (Starlette) under uvicorn: seven routes, JSON everywhere, an OpenAPI page at /docs.

Every answer is JSON (errors: ``{"error", "message", "fix"}``, never FastAPI's ``{"detail"}``) except file
downloads and the event stream. Checks that apply to every request (Host, Origin, token, path) run first, in
:mod:`orbitmesh.server.middleware`; the job queue is :class:`orbitmesh.server.jobs.JobManager`; the socket,
uvicorn and connection limits are :mod:`orbitmesh.server.listener`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from orbitmesh import __version__
from orbitmesh.errors import OrbitMeshError
from orbitmesh.executors.base import Executor, Runner
from orbitmesh.jobs import TERMINAL
from orbitmesh.server import security
from orbitmesh.server.api_errors import ApiError, bad_request, not_found
from orbitmesh.server.config import ServerConfig
from orbitmesh.server.health import health_info
from orbitmesh.server.jobs import JobManager, run_generate
from orbitmesh.server.listener import OrbitMeshServer
from orbitmesh.server.middleware import RequestChecks
from orbitmesh.server.uploads import parse_settings_json, validate_image
from orbitmesh.settings import Settings

if TYPE_CHECKING:
    from orbitmesh.server.jobs import ServerJob

log = logging.getLogger("orbitmesh.server")

JSON_LIMIT = 1 << 20
# An over-limit body is read and thrown away up to this many bytes before answering 413, so the client sees
# the JSON error instead of a connection reset; beyond it the connection is closed.
DRAIN_MAX = 64 << 20
FORM_FIELDS = ("image", "settings")
CONTENT_TYPES = {".glb": "model/gltf-binary", ".gltf": "model/gltf+json", ".obj": "text/plain",
                 ".json": "application/json", ".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}
ENDPOINTS = "/health, /jobs, /jobs/{id}[/events|/cancel|/files/{name}] (and /docs)"


def make_server(settings: Settings, config: ServerConfig | None = None, *, runner: Runner | None = None,
                executor: Executor | None = None, jobs_root: str | Path | None = None) -> OrbitMeshServer:
    """Check the bind address, bind, list existing jobs (queueing unfinished ones again), start the workers;
    ``serve_forever()`` then serves. Jobs run through ``executor`` (one thread per worker: a Ray pool runs
    several at once), else ``runner`` in this process (default: the real pipeline)."""
    config = config or ServerConfig()
    server = OrbitMeshServer(config, settings)  # bind first: a taken port must not touch the jobs folder
    try:
        manager = JobManager(jobs_root or settings.output_dir, settings, default_model=config.default_model,
                             runner=executor.run if executor else runner or run_generate, limits=config.limits,
                             retention=config.retention, allow_model_paths=config.allow_model_paths,
                             workers=executor.workers if executor else 1)
    except BaseException:
        server.socket.close()
        raise
    server.executor = executor
    server.attach(manager)
    return server


class Changes:
    """Wakes event streams (on the event loop) when the worker thread changes any job."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event = asyncio.Event()

    def notify_threadsafe(self) -> None:
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed at shutdown
                loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


def create_app(server: OrbitMeshServer) -> Any:
    """The ASGI app of ``server``: the FastAPI routes inside the request checks."""
    manager = server.manager
    config = server.config
    changes = Changes()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        changes.loop = asyncio.get_running_loop()
        changes.event = asyncio.Event()
        manager.on_change = changes.notify_threadsafe
        yield
        manager.on_change = None
        changes.loop = None

    app = FastAPI(title="OrbitMesh", version=__version__, lifespan=lifespan, redirect_slashes=False,
                  description="Local image/text-to-3D jobs: submit an image or a prompt, follow the job, "
                              "download the GLB. Errors are JSON {error, message, fix}.")
    _install_error_handlers(app, manager)

    @app.get("/health", summary="version, device, models, modes, queue and worker state")
    def health() -> JSONResponse:
        info = health_info(server.settings, config.default_model)
        worker = manager.worker_state()
        info.update(queue_length=manager.queue_length, busy=manager.busy, worker=worker,
                    executor=server.executor.name if server.executor else "local", limits=_limits(config))
        if not worker["alive"] or worker["state"] == "stopping":
            info["status"] = "degraded"
        return _json(200, info)

    @app.get("/jobs", summary="every job, newest first")
    def list_jobs() -> JSONResponse:
        return _json(200, {"jobs": [manager.snapshot(job)[1] for job in manager.list()]})

    @app.post("/jobs", status_code=202, summary="submit an image (multipart 'image' + 'settings' JSON) or a "
                                                "prompt (JSON {prompt, ...settings})")
    async def create_job(request: Request) -> JSONResponse:
        mime = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if mime == "multipart/form-data":
            body = await _read_body(request, config.max_upload_bytes)
            image, settings_text = await _parse_form(request.headers, body)
            job = await run_in_threadpool(_submit_image, manager, image, settings_text)
        elif mime == "application/json":
            body = await _read_body(request, min(JSON_LIMIT, config.max_upload_bytes))
            job = await run_in_threadpool(_submit_prompt, manager, body)
        else:
            raise ApiError(415, "unsupported_media_type", f"unsupported Content-Type {mime or '(none)'!r}",
                           fix="send multipart/form-data with an 'image' file, or application/json with a 'prompt'")
        # "queued": what the job was when accepted (the worker may have started it since)
        return _json(202, {"id": job.id, "status": "queued"}, headers={"Location": f"/jobs/{job.id}"})

    @app.get("/jobs/{job_id}", summary="one job")
    def get_job(job_id: str) -> JSONResponse:
        return _json(200, manager.snapshot(_job(manager, job_id))[1])

    @app.post("/jobs/{job_id}/cancel", summary="cancel a queued job now, a running one at its next step")
    def cancel_job(job_id: str) -> JSONResponse:
        security.check_name(job_id, "job id")
        return _json(200, manager.snapshot(manager.cancel(job_id))[1])

    @app.get("/jobs/{job_id}/files/{name}", summary="download one of the job's files")
    def job_file(job_id: str, name: str) -> FileResponse:
        security.check_name(name, "file name")
        job = _job(manager, job_id)
        files = manager.files(job)
        if name not in files:
            raise not_found(f"job {job_id} has no file {name!r}", fix=f"ask for one of {sorted(files)}")
        path = files[name].resolve()
        if not path.is_relative_to(job.folder.path.resolve()):  # defence in depth against symlinks
            raise not_found(f"job {job_id} has no file {name!r}")
        ctype = (CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
                 or "application/octet-stream")
        return FileResponse(path, media_type=ctype, filename=name, content_disposition_type="attachment",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    @app.get("/models", summary="every model of the catalogue: kind, licence, commercial use, size, available")
    def list_models() -> JSONResponse:
        from orbitmesh.models.manager import models_json

        rows = models_json(server.settings.model_dir)
        for row in rows:
            for key in ("path", "location"):
                if isinstance(row.get(key), str):
                    row[key] = manager.redact(row[key])
        return _json(200, {"models": rows})

    @app.post("/models/{name:path}/download", status_code=202,
              summary="download a catalogue model into the server's model folder (a job: progress, cancel)")
    def download_model(name: str, request: Request) -> JSONResponse:
        job = start_download(server, manager, name, client=request.client.host if request.client else None)
        return _json(202, {"id": job.id, "status": "running"}, headers={"Location": f"/jobs/{job.id}"})

    @app.post("/models/{name:path}/remove", summary="remove a model the manager placed in the model folder")
    def remove_model(name: str, request: Request) -> JSONResponse:
        from orbitmesh.models import manager as models

        _check_model_client(server, name, request.client.host if request.client else None)
        result = models.remove(name, server.settings.model_dir)
        return _json(200, {"name": result.name, "removed": result.removed is not None,
                           "freed_bytes": result.freed_bytes})

    @app.get("/jobs/{job_id}/events", summary="server-sent events: the job object on every change")
    async def job_events(job_id: str) -> StreamingResponse:
        job = _job(manager, job_id)
        return StreamingResponse(_event_stream(manager, job, changes, config.keepalive_s),
                                 media_type="text/event-stream; charset=utf-8",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return RequestChecks(app, token=config.token, loopback_only=server.loopback_only,
                         body_timeout_s=config.body_timeout_s)


# ----- request bodies ---------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes: 413 from Content-Length before reading (after draining a body up
    to DRAIN_MAX so the client reads the answer), or as soon as a chunked body passes the limit."""
    raw = request.headers.get("content-length")
    if raw is not None:
        if not raw.isdigit() or len(raw) > 18:
            raise bad_request(f"bad Content-Length {raw[:40]!r}", fix="send the body's size in bytes")
        if int(raw) > limit:
            if int(raw) <= DRAIN_MAX:
                with contextlib.suppress(ClientDisconnect):
                    async for _chunk in request.stream():
                        pass
            raise _too_large(int(raw), limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:  # nobody reads this answer; it only keeps the log free of a false bug
        raise bad_request(f"the body ended after {size} bytes", fix="send the whole body",
                          code="truncated_body") from None
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "payload_too_large",
                    f"the upload is {size / 2**20:.1f} MB, over the server's limit of {limit / 2**20:.1f} MB",
                    fix="send a smaller image, or restart the server with a larger --max-upload-mb")


async def _parse_form(headers: Headers, body: bytes) -> tuple[UploadFile, bytes | None]:
    """(the 'image' file, the 'settings' text) of a strict form: known fields once each, closed properly."""
    params = dict(p.strip().split("=", 1) for p in headers.get("content-type", "").split(";")[1:] if "=" in p)
    boundary = params.get("boundary", "").strip('"').encode("latin-1")
    if not boundary:
        raise bad_request("the multipart form has no boundary", fix="let the HTTP client build the form",
                          code="malformed_multipart")
    if body.rfind(b"--" + boundary + b"--") < 0:
        raise bad_request("the multipart form is not closed (the upload was cut off?)",
                          fix="send the whole form, ending with its closing boundary", code="malformed_multipart")

    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=4, max_fields=8, max_part_size=JSON_LIMIT).parse()
    except MultiPartException as exc:
        raise bad_request(f"malformed multipart form: {exc.message}", fix="let the HTTP client build the form",
                          code="malformed_multipart") from None
    names = [name for name, _ in form.multi_items()]
    for name in names:
        if name not in FORM_FIELDS:
            raise bad_request(f"unknown form field {name!r}", fix=f"send only {' and '.join(FORM_FIELDS)}",
                              code="unknown_field")
        if names.count(name) > 1:
            raise bad_request(f"the form field {name!r} appears twice", fix="send each field once",
                              code="duplicate_field")
    if "image" not in names:
        raise bad_request("the form has no 'image' field", fix="send the image file in a form field named 'image'",
                          code="missing_field")
    image = form["image"]
    if not isinstance(image, UploadFile):
        raise bad_request("the form field 'image' is not a file", code="missing_field",
                          fix="send the image as a file part (with a filename) named 'image'")
    settings = form.get("settings")
    if isinstance(settings, UploadFile):
        settings = await settings.read()
    return image, settings.encode("utf-8", "surrogateescape") if isinstance(settings, str) else settings


def _submit_image(manager: JobManager, image: UploadFile, settings_text: bytes | None) -> ServerJob:
    security.check_upload_filename(image.filename)
    values = parse_settings_json(settings_text) if settings_text is not None else {}
    request, commercial_only = manager.prepare(values)
    image.file.seek(0)
    data = image.file.read()
    ext, _size = validate_image(data)
    name = Path(image.filename).stem if image.filename else "image"
    return manager.submit(request, name=name, upload=data, upload_ext=ext, commercial_only=commercial_only)


def _submit_prompt(manager: JobManager, body: bytes) -> ServerJob:
    values = parse_settings_json(body, "the body")
    prompt = values.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad_request("a JSON job needs a non-empty 'prompt' text",
                          fix='send {"prompt": "a wooden chair", ...settings}, or upload an image '
                              "as multipart/form-data", code="invalid_settings")
    request, commercial_only = manager.prepare(values, prompt=prompt)
    return manager.submit(request, name=prompt, commercial_only=commercial_only)


def _check_model_client(server: OrbitMeshServer, name: str, client: str | None) -> None:
    """404 for a name outside the catalogue; 403 for a remote client unless --allow-remote-downloads."""
    from orbitmesh.models import catalogue

    if name not in catalogue.CATALOGUE:
        raise not_found(f"no model {name!r} in the catalogue", fix="GET /models lists the names")
    if not server.config.allow_remote_downloads and not (client and security.is_loopback(client)):
        raise ApiError(403, "forbidden_download", "model downloads and removals are only for clients on the "
                       "server's machine", fix="use `orbitmesh models` on the server, or restart it with "
                                               "--allow-remote-downloads")


def start_download(server: OrbitMeshServer, manager: JobManager, name: str, *, client: str | None) -> ServerJob:
    """A download job for catalogue model ``name`` (the licence is taken as accepted: the client showed it).
    Remote clients may start one only on a server started with --allow-remote-downloads."""
    from orbitmesh.models import manager as models

    _check_model_client(server, name, client)
    model_dir = server.settings.model_dir

    def task(tracker) -> dict:
        tracker.plan(["download"], [1.0])
        relay = lambda ev: tracker("download", int(ev["done_bytes"]), int(ev["total_bytes"] or 0),
                                   f"{ev.get('phase', 'download')} {ev.get('file') or ''}".strip())
        result = models.download(name, model_dir, progress=relay, cancel=lambda: tracker.cancelled, confirm=True)
        return {key: manager.redact(value) if isinstance(value, str) else value
                for key, value in result.to_dict().items()}

    return manager.start_task("download", f"download {name}", task, settings={"model": name})


# ----- answers -------------------------------------------------------------------------------------


def _job(manager: JobManager, job_id: str) -> ServerJob:
    return manager.get(security.check_name(job_id, "job id"))


async def _event_stream(manager: JobManager, job: ServerJob, changes: Changes,
                        keepalive_s: float) -> AsyncIterator[bytes]:
    """The job object whenever it changes (ending after a terminal one), a comment every ``keepalive_s``."""
    seen = None
    last_write = time.monotonic()
    while True:
        if manager.version(job) != seen:
            seen, data = manager.snapshot(job)
            yield b"data: " + _dumps(data) + b"\n\n"
            last_write = time.monotonic()
            if data["status"] in TERMINAL:
                return
        if manager.stopping:
            return
        # Other jobs' changes wake us too: the comment goes out after keepalive_s without a write of our own.
        await changes.wait(max(0.0, keepalive_s - (time.monotonic() - last_write)))
        if time.monotonic() - last_write >= keepalive_s and manager.version(job) == seen:
            yield b": keep-alive\n\n"
            last_write = time.monotonic()


def _limits(config: ServerConfig) -> dict[str, Any]:
    limits = config.limits
    return {"max_upload_mb": round(config.max_upload_bytes / 2**20, 3), "max_mc_resolution": limits.max_mc_resolution,
            "max_texture_size": limits.max_texture_size, "max_faces": limits.max_faces}


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(obj, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


def _error(status: int, payload: dict, headers: dict[str, str] | None = None) -> JSONResponse:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="orbitmesh"'}
    return _json(status, payload, headers)


def _install_error_handlers(app: FastAPI, manager: JobManager) -> None:
    """Every error as {error, message, fix} with no server path; never FastAPI's {"detail"} or 422."""

    def answer(status: int, code: str, message: str, fix: str | None, headers=None) -> JSONResponse:
        return _error(status, {"error": code, "message": manager.redact(message), "fix": manager.redact(fix)},
                      headers)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc.status, exc.code, exc.message, exc.fix)

    @app.exception_handler(OrbitMeshError)
    async def orbitmesh_error(_request: Request, exc: OrbitMeshError) -> JSONResponse:
        return answer(400, "bad_request", exc.message, exc.fix)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return answer(404, "not_found", f"no such endpoint {request.url.path!r}", f"use {ENDPOINTS}")
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return answer(405, "method_not_allowed", f"{request.method} is not allowed on this endpoint",
                          f"use {allowed.replace(', ', ' or ')}", headers={"Allow": allowed})
        return answer(exc.status_code, f"http_{exc.status_code}", str(exc.detail), "send a well-formed request")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(400, "bad_request", f"invalid request: {exc.errors()[:1]}", "see the API at /docs")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return answer(500, "internal_error", f"{type(exc).__name__}: {exc}",
                      "this is a bug: please report it with the server log")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=str).encode("utf-8")
