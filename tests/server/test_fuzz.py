"""Black-box fuzz corpus for the HTTP layer of ``orbitmesh serve``: a few hundred hostile or malformed requests,
sent as raw bytes on fresh sockets, each checked against one contract:

- the answer is a 4xx: the specific one where the API says so (bad settings or body 400, foreign ``Origin`` or
  ``Host`` 403, wrong method 405, too large 413), never a 5xx, never FastAPI's 422;
- its body is JSON with exactly ``error``, ``message`` and ``fix`` (strings; ``fix`` may be null), never
  ``{"detail": ...}``, and names no absolute path of the server (jobs folder, model folder, source tree, home);
- afterwards ``GET /health`` still answers 200 ``{"status": "ok"}`` and the refused request left nothing in the
  jobs folder.

Raw sockets (not http.client) so that each case controls the framing byte for byte. One server for the module;
it runs a fake runner that writes a tiny GLB at once: these cases test the HTTP layer, not the pipeline, and a
fake keeps the corpus within seconds.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from orbitmesh.jobs import JobFolder
from orbitmesh.pipeline.request import GenerateResult
from orbitmesh.server.app import ServerConfig

UPLOAD_LIMIT = 512 << 10  # small, so the 413 cases stay small; JSON bodies share it (min(1 MiB, upload limit))
READ_TIMEOUT = 5.0  # per answer; a server that waits for a body it will never get fails here, not in an hour
BOUNDARY = "fuzzBoundary7MA4YWxk"
FORM_CT = f"multipart/form-data; boundary={BOUNDARY}"
JSON_CT = "application/json"


# ----- the fake runner ---------------------------------------------------------------------------------------

def _tiny_glb() -> bytes:
    """The smallest valid GLB: header + one JSON chunk (``{"asset": {"version": "2.0"}}``, space padded)."""
    doc = json.dumps({"asset": {"version": "2.0"}}).encode()
    doc += b" " * (-len(doc) % 4)
    return struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(doc)) + struct.pack("<I4s", len(doc), b"JSON") + doc


GLB = _tiny_glb()


def fake_run(request, settings, tracker) -> GenerateResult:
    """Stands in for the pipeline (fine here: this module tests the HTTP layer): a pipeline job folder under the
    run's output_dir holding a tiny model.glb, as generate() leaves it."""
    folder = JobFolder.create(settings.output_dir, "fake")
    glb = folder.write_bytes("model.glb", GLB)
    folder.update(status="done")
    return GenerateResult(job_dir=folder.path, glb_path=glb, request=request, model="fake")


# ----- raw HTTP ----------------------------------------------------------------------------------------------

@dataclass
class Response:
    status: int | None  # None: the bytes did not start with an HTTP/1.x status line
    headers: dict[str, list[str]]  # lower-case names
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def _parse_response(sock: socket.socket, deadline: float) -> Response | None:
    """Read one response from ``sock``; None when the server closed (or reset) without sending a byte."""
    buf = b""

    def more() -> bytes:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            return sock.recv(1 << 16)
        except TimeoutError:
            raise AssertionError(f"no complete answer within {READ_TIMEOUT} s (got {buf[:200]!r})") from None
        except ConnectionResetError:
            return b""

    while b"\r\n\r\n" not in buf:
        data = more()
        if not data:
            if not buf:
                return None
            return Response(None, {}, buf, buf)  # e.g. an HTTP/0.9 answer: a body with no status line
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        return Response(None, {}, buf, buf)
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = headers.get("content-length")
    if length:
        while len(body) < int(length[0]):
            data = more()
            if not data:
                break
            body += data
        body = body[: int(length[0])]
    elif "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        while not body.endswith(b"0\r\n\r\n"):
            data = more()
            if not data:
                break
            body += data
        body = _dechunk(body)
    else:
        while data := more():
            body += data
    return Response(int(parts[1]), headers, body, buf)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def exchange(port: int, data: bytes, end: str = "open") -> Response | None:
    """Send ``data`` on a fresh connection and read one answer.

    The bytes go out from a thread so that a server answering before it has read everything (413) cannot
    deadlock us. ``end``: "open" keeps our side open while reading (we announce ``Connection: close``),
    "half" shuts our writing side after sending (a client that gave up mid-body), "close" closes at once and
    reads nothing (returns None). None also means: the server closed without answering.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    try:
        if end == "close":
            try:
                sock.sendall(data)
            except OSError:
                pass
            return None

        def send() -> None:
            try:
                sock.sendall(data)
                if end == "half":
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server answered and closed before taking it all: read what it said

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        resp = _parse_response(sock, time.monotonic() + READ_TIMEOUT)
        sender.join(1.0)
        return resp
    finally:
        sock.close()


# ----- request builders (each returns build(ctx) -> bytes) ----------------------------------------------------

@dataclass
class Ctx:
    port: int
    job_id: str  # a finished job of this server (its upload.png and model.glb exist)
    jobs_root: Path
    forbidden: tuple[str, ...]  # absolute server paths no refusal may name

    def fill(self, head: bytes) -> bytes:
        return head.replace(b"{job}", self.job_id.encode()).replace(b"{port}", str(self.port).encode())


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


HOST = object()  # the default Host header: 127.0.0.1:<port>

Header = tuple[str | bytes, str | bytes] | bytes  # (name, value), or a raw header line


def req(method: str | bytes, target: str | bytes, headers: tuple[Header, ...] = (), body: bytes | str = b"", *,
        host: object = HOST, version: str = "HTTP/1.1", length: bool = True,
        close: bool = True) -> Callable[[Ctx], bytes]:
    """A request as raw bytes. ``{job}`` and ``{port}`` in the request line and headers become the fixture job's
    id and the port; Content-Length is added for a body (or any POST/PUT/PATCH) unless ``length`` is False."""
    body = _b(body)

    def build(ctx: Ctx) -> bytes:
        lines = [_b(method) + b" " + _b(target) + b" " + _b(version)]
        if host is HOST:
            lines.append(b"Host: 127.0.0.1:{port}")
        for item in headers:
            lines.append(item if isinstance(item, bytes) else _b(item[0]) + b": " + _b(item[1]))
        if length and (body or _b(method) in (b"POST", b"PUT", b"PATCH")):
            lines.append(b"Content-Length: " + str(len(body)).encode())
        if close:
            lines.append(b"Connection: close")
        return ctx.fill(b"\r\n".join(lines) + b"\r\n\r\n") + body

    return build


def raw(data: bytes) -> Callable[[Ctx], bytes]:
    return lambda ctx: ctx.fill(data)


def form(*parts: tuple[str, str | None, bytes] | bytes, closed: bool = True, boundary: str = BOUNDARY) -> bytes:
    """A multipart body: (name, filename or None, data) fields or raw part bytes (headers + CRLFCRLF + data)."""
    out = b""
    for part in parts:
        if isinstance(part, tuple):
            name, filename, data = part
            disp = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            part = _b(disp) + b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data
        out += f"--{boundary}\r\n".encode() + part + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if closed else b"")


def post_form(*parts, headers: tuple[Header, ...] = (), ctype: str = FORM_CT, **kw) -> Callable[[Ctx], bytes]:
    return req("POST", "/jobs", (("Content-Type", ctype), *headers), form(*parts, **kw))


def post_json(body: str | bytes, headers: tuple[Header, ...] = ()) -> Callable[[Ctx], bytes]:
    return req("POST", "/jobs", (("Content-Type", JSON_CT), *headers), body)


def _image(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 30)).save(buf, fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose data is one tiny row: a decompression-bomb header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + _png_chunk(b"IEND", b""))


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A real 64x64 JPEG with its SOF0 size patched (the header claims a huge image, the data is tiny)."""
    data = bytearray(_image((64, 64), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


PNG = _image((64, 64))
JPEG = _image((64, 64), "JPEG")
IMAGE = ("image", "chair.png", PNG)
MODEL = '"model": "tiny-random"'  # a model that resolves without files, so only the fuzzed part is wrong
SETTINGS = ("settings", None, b'{' + MODEL.encode() + b'}')

# Error codes a case may answer with (the existing specific codes, plus the generic ones).
SETTINGS_ERRORS = frozenset({"invalid_settings", "invalid_json", "bad_request", "too_much_memory"})
MODEL_ERRORS = SETTINGS_ERRORS | {"model_unavailable"}
IMAGE_ERRORS = frozenset({"invalid_image", "empty_upload", "bad_request"})
FORM_ERRORS = frozenset({"malformed_multipart", "missing_field", "duplicate_field", "unknown_field",
                         "unsafe_filename", "bad_request"})
PATH_ERRORS = frozenset({"unsafe_path", "not_found", "bad_request"})
FORBIDDEN = frozenset({"forbidden_origin", "forbidden_host"})
TOO_LARGE = frozenset({"payload_too_large"})
METHOD = frozenset({"method_not_allowed"})


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], bytes]
    statuses: frozenset[int]
    errors: frozenset[str] | None = None  # allowed "error" codes; None: any
    # The HTTP parser may refuse it before the application sees it (h11 under uvicorn answers such garbage
    # with a plain-text 400): only for these is a 400 without a JSON body accepted.
    framing: bool = False
    end: str = "open"  # see exchange()
    silent_ok: bool = False  # the client gave up mid-request: closing without an answer is fine too


CASES: list[Case] = []


def case(id: str, build, statuses, errors=None, **kw) -> None:
    CASES.append(Case(id, build, frozenset({statuses} if isinstance(statuses, int) else statuses),
                      None if errors is None else frozenset(errors), **kw))


# ----- bad images (multipart, valid settings) ---------------------------------------------------------------

_png_bad_crc = bytearray(PNG)
_png_bad_crc[-20] ^= 0xFF  # inside the IDAT data: its CRC no longer matches
for _id, _name, _data in [
    ("empty", "chair.png", b""),
    ("truncated-png", "chair.png", PNG[: len(PNG) // 2]),
    ("png-signature-only", "chair.png", PNG[:8]),
    ("truncated-jpeg", "chair.jpg", JPEG[: len(JPEG) // 2]),
    ("jpeg-soi-only", "chair.jpg", b"\xff\xd8\xff"),
    ("png-bad-crc", "chair.png", bytes(_png_bad_crc)),
    ("text", "chair.png", b"hello, this is not an image\n"),
    ("html-named-png", "chair.png", b"<!doctype html><script>alert(1)</script>"),
    ("pdf-named-jpg", "chair.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
    ("zip-named-png", "chair.png", b"PK\x03\x04" + b"\x00" * 40),
    ("svg-named-png", "chair.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>'),
    ("eps-header", "chair.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"),
    ("ppm-not-accepted", "chair.ppm", b"P6\n64 64\n255\n" + b"\x80" * (64 * 64 * 3)),
    ("one-pixel", "chair.png", _image((1, 1))),
    ("eight-pixels", "chair.png", _image((8, 8))),
    ("one-pixel-tall-strip", "chair.png", _image((512, 1))),
    ("bomb-header-png-100k", "chair.png", _png_declaring(100_000, 100_000)),
    ("bomb-header-png-20k", "chair.png", _png_declaring(20_000, 20_000)),
    ("bomb-header-png-wide", "chair.png", _png_declaring(60_000, 64)),
    ("png-zero-width", "chair.png", _png_declaring(0, 64)),
    ("bomb-header-jpeg", "chair.jpg", _jpeg_declaring(65_000, 65_000)),
    ("gif-huge-logical-screen", "chair.gif", b"GIF89a\xff\xff\xff\xff\x00\x00\x00;"),
    ("webp-header-only", "chair.webp", b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00"),
]:
    case(f"image-{_id}", post_form(("image", _name, _data), SETTINGS), 400, IMAGE_ERRORS)

# Upload file names are never used as paths, but one that tries is refused.
for _id, _filename in [("traversal", "../../etc/passwd.png"), ("absolute", "/etc/passwd.png"),
                       ("backslashes", "..\\..\\windows\\win.ini.png"), ("drive", "C:chair.png"),
                       ("dotdot", ".."), ("nul", "chair\x00.png"), ("long", "a" * 300 + ".png")]:
    case(f"image-filename-{_id}", post_form(("image", _filename, PNG), SETTINGS), 400, FORM_ERRORS | IMAGE_ERRORS)

# ----- settings: types and ranges, in a multipart form and in a JSON body ---------------------------------------

NEST = 1000
BAD_SETTINGS: list[tuple[str, str]] = [
    ("seed-string", '{"seed": "1"}'),
    ("seed-float", '{"seed": 1.5}'),
    ("seed-whole-float", '{"seed": 1.0}'),
    ("seed-bool", '{"seed": true}'),
    ("seed-negative", '{"seed": -1}'),
    ("seed-over-max", '{"seed": 4294967296}'),
    ("seed-5001-digits", '{"seed": ' + "9" * 5001 + "}"),
    ("seed-nan", '{"seed": NaN}'),
    ("seed-infinity", '{"seed": Infinity}'),
    ("seed-minus-infinity", '{"seed": -Infinity}'),
    ("seed-1e400", '{"seed": 1e400}'),
    ("seed-null", '{"seed": null}'),
    ("seed-list", '{"seed": [1]}'),
    ("seed-object", '{"seed": {"value": 1}}'),
    ("seed-duplicate-key-last-bad", '{"seed": 1, "seed": "x"}'),
    ("mc-resolution-below-min", '{"mc_resolution": 31}'),
    ("mc-resolution-huge", '{"mc_resolution": 100000}'),
    ("target-faces-zero", '{"target_faces": 0}'),
    ("texture-size-negative", '{"texture_size": -1024}'),
    ("texture-size-string", '{"texture_size": "1024"}'),
    ("texture-size-nan", '{"texture_size": NaN}'),
    ("orbit-steps-zero", '{"orbit_steps": 0}'),
    ("mode-unknown", '{"mode": "FAST"}'),
    ("mode-empty", '{"mode": ""}'),
    ("mode-null", '{"mode": null}'),
    ("mode-list", '{"mode": ["fast"]}'),
    ("mode-very-long", '{"mode": "' + "x" * 100_000 + '"}'),
    ("input-texture-string", '{"input_texture": "true"}'),
    ("input-texture-int", '{"input_texture": 1}'),
    ("carve-null", '{"carve": null}'),
    ("carve-string-false", '{"carve": "false"}'),
    ("commercial-only-string", '{"commercial_only": "yes"}'),
    ("commercial-only-int", '{"commercial_only": 1}'),
    ("commercial-only-null", '{"commercial_only": null}'),
    ("unknown-key", '{"sede": 1}'),
    ("unknown-key-very-long", '{"' + "k" * 10_000 + '": 1}'),
    ("unknown-key-dunder", '{"__class__": 1}'),
    ("output-path-not-a-setting", '{"output": "/tmp/stolen.glb"}'),
    ("image-path-not-a-setting", '{"image_path": "/etc/passwd"}'),
    ("model-very-long", '{"model": "' + "m" * 5000 + '"}'),
    ("model-empty", '{"model": ""}'),
    ("model-int", '{"model": 3}'),
    ("text-to-image-model-list", '{"text_to_image_model": ["a"]}'),
    ("nested-list-1000", '{"seed": ' + "[" * NEST + "]" * NEST + "}"),
    ("nested-object-1000", '{"seed": ' + '{"a": ' * NEST + "1" + "}" * NEST + "}"),
]


def _with(prefix: str, settings: str) -> str:
    """'{"seed": 1}' -> '{<prefix>, "seed": 1}', adding the model unless the case sets one."""
    if '"model"' not in settings:
        prefix = f"{prefix}, {MODEL}" if prefix else MODEL
    return "{" + prefix + ", " + settings[1:]


for _id, _settings in BAD_SETTINGS:
    errors = MODEL_ERRORS if _id.startswith(("model", "text-to-image")) else SETTINGS_ERRORS
    case(f"settings-form-{_id}", post_form(IMAGE, ("settings", None, _with("", _settings).encode())), 400, errors)
    case(f"settings-json-{_id}", post_json(_with('"prompt": "a chair"', _settings)), 400, errors)

# The settings field itself, not a setting in it.
for _id, _text in [("not-json", b"seed=1"), ("array", b"[]"), ("string", b'"x"'), ("null", b"null"),
                   ("empty", b""), ("invalid-utf8", b'{"seed": "\xff\xfe"}'),
                   ("nested-1000", b"[" * NEST + b"]" * NEST), ("truncated", b'{"seed": 1')]:
    case(f"settings-field-{_id}", post_form(IMAGE, ("settings", None, _text)), 400, SETTINGS_ERRORS)

# ----- JSON bodies -----------------------------------------------------------------------------------------------

for _id, _body in [
    ("empty", b""),
    ("not-json", b"prompt=a chair"),
    ("truncated", b'{"prompt": "a'),
    ("trailing-comma", b'{"prompt": "a chair",}'),
    ("array", b'["a chair"]'),
    ("string", b'"a chair"'),
    ("number", b"1"),
    ("null", b"null"),
    ("nan", b"NaN"),
    ("invalid-utf8", b'{"prompt": "\xff\xfe"}'),
    ("prompt-missing", b'{"seed": 1}'),
    ("prompt-empty", b'{"prompt": ""}'),
    ("prompt-blank", b'{"prompt": "   \\n\\t"}'),
    ("prompt-int", b'{"prompt": 7}'),
    ("prompt-null", b'{"prompt": null}'),
    ("prompt-list", b'{"prompt": ["a chair"]}'),
    ("prompt-object", b'{"prompt": {"text": "a chair"}}'),
    ("prompt-nested-1000", b'{"prompt": ' + b"[" * NEST + b"]" * NEST + b"}"),
    ("nested-list-1000", b"[" * NEST + b"]" * NEST),
    ("nested-object-1000", b'{"a": ' * NEST + b"1" + b"}" * NEST),
    ("nested-list-100k", b"[" * 100_000 + b"]" * 100_000),
    ("number-5001-digits", b"9" * 5001),
]:
    case(f"body-{_id}", post_json(_body), 400, SETTINGS_ERRORS)

for _id, _ctype, _body in [("none", None, b'{"prompt": "a chair"}'), ("text-plain", "text/plain", b"a chair"),
                           ("urlencoded", "application/x-www-form-urlencoded", b"prompt=a+chair"),
                           ("multipart-mixed", f"multipart/mixed; boundary={BOUNDARY}", form(IMAGE))]:
    headers = (("Content-Type", _ctype),) if _ctype else ()
    case(f"body-content-type-{_id}", req("POST", "/jobs", headers, _body), 415, {"unsupported_media_type"})

# ----- multipart structure ---------------------------------------------------------------------------------------

_big_part_header = b'Content-Disposition: form-data; name="image"; filename="a.png"\r\nX-Pad: ' + b"p" * 10_000
for _id, _build in [
    ("no-boundary", post_form(IMAGE, ctype="multipart/form-data")),
    ("empty-boundary", post_form(IMAGE, ctype="multipart/form-data; boundary=")),
    ("boundary-mismatch", post_form(IMAGE, ctype="multipart/form-data; boundary=other")),
    ("not-closed", post_form(IMAGE, SETTINGS, closed=False)),
    ("no-image-field", post_form(SETTINGS)),
    ("empty-form", post_form()),
    ("duplicate-image", post_form(IMAGE, IMAGE, SETTINGS)),
    ("duplicate-settings", post_form(IMAGE, SETTINGS, SETTINGS)),
    ("unknown-field", post_form(IMAGE, ("file", "x.png", PNG))),
    ("no-content-disposition", post_form(b"Content-Type: image/png\r\n\r\n" + PNG)),
    ("part-header-10k", post_form(_big_part_header + b"\r\n\r\n" + PNG)),
    ("hundred-parts", post_form(IMAGE, *[(f"f{i}", None, b"x") for i in range(100)])),
    ("garbage-body", req("POST", "/jobs", (("Content-Type", FORM_CT),), b"\x00\xff garbage without delimiters")),
]:
    case(f"form-{_id}", _build, 400, FORM_ERRORS)

# ----- model names that are paths, URLs or hub ids: 400, and the answer names no server path ----------------------

MODEL_NAMES = [("etc-passwd", "/etc/passwd"), ("tilde", "~"), ("tilde-cache", "~/.cache/huggingface"),
               ("dotdot-x", "../x"), ("dotdot", ".."), ("root", "/"), ("hub-id", "someone/some-model"),
               ("hub-id-revision", "someone/some-model@main"), ("file-url", "file:///etc/passwd"),
               ("https-url", "https://evil.example/model.safetensors"), ("windows-path", "C:\\Windows\\win.ini"),
               ("unc-path", "\\\\server\\share\\model"), ("proc-environ", "/proc/self/environ"),
               ("builtin-then-dotdot", "tiny-random/../../etc")]
for _id, _name in MODEL_NAMES:
    _value = json.dumps(_name)
    case(f"model-json-{_id}", post_json(f'{{"prompt": "a chair", "model": {_value}}}'), 400, MODEL_ERRORS)
    case(f"model-form-{_id}", post_form(IMAGE, ("settings", None, f'{{"model": {_value}}}'.encode())), 400,
         MODEL_ERRORS)
for _id, _name in MODEL_NAMES[:7]:
    case(f"t2i-model-json-{_id}",
         post_json(f'{{"prompt": "a chair", {MODEL}, "text_to_image_model": {json.dumps(_name)}}}'), 400,
         MODEL_ERRORS)

# ----- size limits -----------------------------------------------------------------------------------------------

_over = UPLOAD_LIMIT + (64 << 10)
case("size-form-over-limit", post_form(("image", "big.png", PNG + b"\x00" * _over), SETTINGS), 413, TOO_LARGE)
case("size-json-over-limit", post_json('{"prompt": "' + "a" * _over + '"}'), 413, TOO_LARGE)
# The declared length alone must be refused: no body follows, so a server that waits for it never answers.
# h11 refuses a Content-Length of more than 20 digits itself (a plain-text 400): framing.
for _id, _length, _statuses, _kw in [("1e12", "1000000000000", 413, {}),
                                     ("1e30", "1" + "0" * 30, {400, 413}, {"framing": True})]:
    for _kind, _ctype in [("form", FORM_CT), ("json", JSON_CT)]:
        case(f"size-declared-{_id}-no-body-{_kind}",
             req("POST", "/jobs", (("Content-Type", _ctype), ("Content-Length", _length)), length=False), _statuses,
             TOO_LARGE | ({"bad_request"} if _kw else set()), **_kw)

# ----- framing ---------------------------------------------------------------------------------------------------

_json_bad = b'{"prompt": '  # an invalid body, so a server that accepts the framing still answers 400
_chunked = (("Content-Type", JSON_CT), ("Transfer-Encoding", "chunked"))
for _id, _build, _statuses, _errors, _kw in [
    # A proxy-style absolute target names another host: it reaches the app, which must refuse it.
    ("absolute-form-evil", req("GET", "http://evil.com/health"), {400, 403, 404}, None, {}),
    ("absolute-form-evil-post", req("POST", "http://evil.com/jobs", (("Content-Type", JSON_CT),),
                                    b'{"prompt": "a chair"}'), {400, 403, 404}, None, {}),
    ("connect", req("CONNECT", "evil.com:443"), {400, 403, 404, 405}, None, {"framing": True}),
    ("options-asterisk", req("OPTIONS", "*"), {400, 404, 405}, None, {"framing": True}),
    ("missing-host-http11", req("GET", "/health", host=None), {400, 403}, None, {"framing": True}),
    # Content-Length that is not a non-negative decimal number: the parser's job.
    ("content-length-letters", post_json(_json_bad, (("Content-Length", "abc"),)), 400, None,
     {"framing": True}),
    ("content-length-negative", req("POST", "/jobs", (("Content-Type", JSON_CT), ("Content-Length", "-1")),
                                    _json_bad, length=False), 400, None, {"framing": True}),
    ("content-length-hex", req("POST", "/jobs", (("Content-Type", JSON_CT), ("Content-Length", "0x0b")),
                               _json_bad, length=False), 400, None, {"framing": True}),
    ("content-length-plus", req("POST", "/jobs", (("Content-Type", JSON_CT), ("Content-Length", "+11")),
                                _json_bad, length=False), 400, None, {"framing": True}),
    ("content-length-conflicting", req("POST", "/jobs", (("Content-Type", JSON_CT), ("Content-Length", "11"),
                                                         ("Content-Length", "5")), _json_bad, length=False),
     400, None, {"framing": True}),
    ("content-length-5001-digits", req("POST", "/jobs", (("Content-Type", JSON_CT),
                                                         ("Content-Length", "9" * 5001)), length=False),
     {400, 413}, None, {"framing": True}),
    # A body shorter than announced: the client stops (half-close) or vanishes; the server must just survive.
    ("content-length-longer-than-body-half-close",
     req("POST", "/jobs", (("Content-Type", FORM_CT), ("Content-Length", "5000")), form(IMAGE)[:100],
         length=False), 400, None, {"end": "half", "silent_ok": True}),
    ("content-length-longer-than-body-close",
     req("POST", "/jobs", (("Content-Type", FORM_CT), ("Content-Length", "5000")), form(IMAGE)[:100],
         length=False), 400, None, {"end": "close", "silent_ok": True}),
    ("content-length-shorter-than-body", req("POST", "/jobs", (("Content-Type", JSON_CT), ("Content-Length", "2")),
                                             b'{"prompt": "a chair"}', length=False), 400, SETTINGS_ERRORS, {}),
    ("content-length-zero-json", req("POST", "/jobs", (("Content-Type", JSON_CT), ("Content-Length", "0")),
                                     length=False), 400, SETTINGS_ERRORS, {}),
    # Chunked bodies: refusing chunked (411) or decoding it and refusing the content are both fine.
    ("chunked-invalid-json", req("POST", "/jobs", _chunked, b"b\r\n" + _json_bad + b"\r\n0\r\n\r\n", length=False),
     {400, 411}, SETTINGS_ERRORS | {"length_required"}, {}),
    ("chunked-bad-size", req("POST", "/jobs", _chunked, b"zz\r\n" + _json_bad + b"\r\n0\r\n\r\n", length=False),
     {400, 411}, None, {"framing": True}),
    ("chunked-over-limit", req("POST", "/jobs", _chunked, b"".join(
        b"%x\r\n" % (64 << 10) + b"a" * (64 << 10) + b"\r\n" for _ in range(10)) + b"0\r\n\r\n", length=False),
     {411, 413}, {"length_required", "payload_too_large"}, {}),
    ("chunked-truncated-half-close", req("POST", "/jobs", _chunked, b"400\r\n" + _json_bad, length=False),
     {400, 411}, None, {"framing": True, "end": "half", "silent_ok": True}),
    ("chunked-with-content-length", req("POST", "/jobs", (*_chunked, ("Content-Length", "16")),
                                        b"b\r\n" + _json_bad + b"\r\n0\r\n\r\n", length=False),
     {400, 411}, None, {"framing": True}),
    ("transfer-encoding-gzip-chunked", req("POST", "/jobs", (("Content-Type", JSON_CT),
                                                             ("Transfer-Encoding", "gzip, chunked")),
                                           b"b\r\n" + _json_bad + b"\r\n0\r\n\r\n", length=False),
     {400, 411}, None, {"framing": True}),
    ("transfer-encoding-identity", req("POST", "/jobs", (("Content-Type", JSON_CT),
                                                         ("Transfer-Encoding", "identity")), _json_bad),
     {400, 411}, None, {"framing": True}),
    # Garbage request lines and headers: refused by the parser, a plain-text 400 is fine.
    ("garbage-line", raw(b"GARBAGE\r\n\r\n"), 400, None, {"framing": True}),
    ("binary-line", raw(b"\x00\x01\x02\xff\xfe\r\n\r\n"), 400, None, {"framing": True}),
    ("tls-client-hello", raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n"), 400,
     None, {"framing": True}),
    ("http09-request", raw(b"GET /health\r\n\r\n"), 400, None, {"framing": True}),
    ("extra-token-in-line", raw(b"GET /health HTTP/1.1 extra\r\nHost: 127.0.0.1:{port}\r\n\r\n"), 400, None,
     {"framing": True}),
    ("double-spaces-in-line", raw(b"GET  /health  HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
     400, None, {"framing": True}),
    ("http2-preface", raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), {400, 505}, None, {"framing": True}),
    ("lowercase-method", req("get", "/health"), {400, 405}, None, {"framing": True}),
    ("nul-in-path", req("GET", b"/health\x00"), {400, 404}, None, {"framing": True}),
    ("space-in-path", req("GET", b"/jobs/a b"), 400, None, {"framing": True}),
    ("huge-target", req("GET", "/jobs/" + "a" * 100_000), {400, 404, 414, 431}, None, {"framing": True}),
    ("huge-header", req("GET", "/health", (("X-Pad", "p" * 100_000),)), {400, 431}, None, {"framing": True}),
    ("many-headers", req("GET", "/health", tuple((f"X-H{i}", "v") for i in range(2000))), {400, 431}, None,
     {"framing": True}),
    ("header-without-colon", req("GET", "/health", (b"NoColonHere",)), 400, None, {"framing": True}),
    ("header-space-before-colon", req("GET", "/health", (b"X-A : b",)), 400, None, {"framing": True}),
    ("header-nul-in-value", req("GET", "/health", (b"X-A: a\x00b",)), 400, None, {"framing": True}),
    ("header-bare-cr-in-value", req("GET", "/health", (b"X-A: a\rInjected: 1",)), 400, None, {"framing": True}),
]:
    case(f"framing-{_id}", _build, _statuses, _errors, **_kw)

# ----- Host and Origin (DNS rebinding, browser pages) ---------------------------------------------------------------

_job_json = (("Content-Type", JSON_CT),)
_job_body = '{"prompt": "a chair", ' + MODEL + "}"
for _id, _build, _statuses in [
    ("evil", req("GET", "/health", (("Host", "evil.com"),), host=None), 403),
    ("evil-with-port", req("GET", "/jobs", (("Host", "evil.com:{port}"),), host=None), 403),
    ("evil-on-post-jobs", req("POST", "/jobs", (("Host", "evil.com:{port}"), *_job_json), _job_body, host=None), 403),
    ("loopback-ip-suffix", req("GET", "/health", (("Host", "127.0.0.1.nip.io:{port}"),), host=None), 403),
    ("localhost-suffix", req("GET", "/health", (("Host", "localhost.evil.com"),), host=None), 403),
    ("zero-address", req("GET", "/health", (("Host", "0.0.0.0:{port}"),), host=None), 403),
    ("decimal-ip", req("GET", "/health", (("Host", "2130706433:{port}"),), host=None), 403),
    ("userinfo", req("GET", "/health", (("Host", "127.0.0.1@evil.com"),), host=None), 403),
    ("empty", req("GET", "/health", (("Host", ""),), host=None), {400, 403}),
    # An absolute-form target names its own host (RFC 9112 3.2.2): refused as a proxy request or a foreign Host.
    ("absolute-form-loopback-host-evil", req("GET", "http://127.0.0.1:{port}/health", (("Host", "evil.com"),),
                                             host=None), {400, 403}),
]:
    case(f"host-{_id}", _build, _statuses, FORBIDDEN | ({"bad_request"} if _statuses != 403 else set()))
# Two Host headers: 403 from the app, or h11's own plain-text 400 (it refuses a repeated Host before the app).
for _id, _build in [
    ("duplicate-evil-second", req("GET", "/health", (("Host", "evil.com"),))),
    ("duplicate-evil-first", req("GET", "/health", (("Host", "evil.com"), ("Host", "127.0.0.1:{port}")), host=None)),
    ("duplicate-same", req("GET", "/health", (("Host", "127.0.0.1:{port}"),))),
    ("duplicate-on-post-jobs", req("POST", "/jobs", (("Host", "evil.com"), *_job_json), _job_body)),
]:
    case(f"host-{_id}", _build, {400, 403}, FORBIDDEN | {"bad_request"}, framing=True)

for _id, _origin, _method in [
    ("null", "null", "GET"), ("null-post-jobs", "null", "POST"), ("evil", "https://evil.example", "GET"),
    ("evil-post-jobs", "https://evil.example", "POST"), ("loopback-ip-suffix", "http://127.0.0.1.evil.com", "GET"),
    ("localhost-suffix", "http://localhost.evil.com:{port}", "POST"), ("userinfo", "http://127.0.0.1@evil.com", "GET"),
    ("garbage", "not a url", "GET"), ("file", "file://", "GET"), ("empty", "", "GET"),
    ("extension", "chrome-extension://abcdefghijklmnop", "POST"),
]:
    _build = (req("POST", "/jobs", (("Origin", _origin), *_job_json), _job_body) if _method == "POST"
              else req("GET", "/jobs", (("Origin", _origin),)))
    case(f"origin-{_id}", _build, 403, FORBIDDEN)
case("origin-duplicate-evil-second",
     req("POST", "/jobs", (("Origin", "http://127.0.0.1:{port}"), ("Origin", "https://evil.example"), *_job_json),
         _job_body), 403, FORBIDDEN)
case("origin-evil-options-preflight",
     req("OPTIONS", "/jobs", (("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST"))),
     {403, 405}, FORBIDDEN | METHOD)

# ----- traversal and unknown paths -----------------------------------------------------------------------------------

for _id, _target in [
    ("file-encoded-dotdot-slash", "/jobs/{job}/files/..%2Fjob.json"),
    ("file-encoded-dotdot-lock", "/jobs/{job}/files/..%2f..%2f.serve.lock"),
    ("file-encoded-dots", "/jobs/{job}/files/%2e%2e%2fjob.json"),
    ("file-double-encoded", "/jobs/{job}/files/%252e%252e%252fjob.json"),
    ("file-backslash", "/jobs/{job}/files/..%5Cjob.json"),
    ("file-nul", "/jobs/{job}/files/upload.png%00.glb"),
    ("file-invalid-utf8", "/jobs/{job}/files/%ff"),
    ("file-fullwidth-dots", "/jobs/{job}/files/%EF%BC%8E%EF%BC%8E%EF%BC%8Fjob.json"),
    ("file-job-json-unlisted", "/jobs/{job}/files/job.json"),
    ("file-lock-unlisted", "/jobs/{job}/files/.serve.lock"),
    ("file-run-folder", "/jobs/{job}/files/run"),
    ("file-encoded-absolute", "/jobs/{job}/files/%2Fetc%2Fpasswd"),
    ("file-empty-segment-absolute", "/jobs/{job}/files//etc/passwd"),
    ("file-drive", "/jobs/{job}/files/C:%5CWindows%5Cwin.ini"),
    ("file-too-long", "/jobs/{job}/files/" + "b" * 300),
    ("raw-dotdot", "/jobs/{job}/../{job}/files/job.json"),
    ("job-encoded-dotdot", "/jobs/..%2F{job}/files/model.glb"),
    ("job-dots", "/jobs/%2e%2e/files/job.json"),
    ("job-slash-encoded", "/jobs/{job}%2Ffiles%2Fjob.json"),
    ("job-empty", "/jobs//files/model.glb"),
    ("job-too-long", "/jobs/" + "a" * 300),
    ("root-encoded-dotdot", "/%2e%2e/%2e%2e/etc/passwd"),
    ("root-dotdot-slashes", "/..%2f..%2fetc%2fpasswd"),
    ("no-such-job", "/jobs/no-such-job"),
    ("no-such-job-events", "/jobs/no-such-job/events"),
    ("no-such-endpoint", "/nope"),
    ("no-such-sub-endpoint", "/jobs/{job}/nope"),
    ("no-such-file", "/jobs/{job}/files/nope.glb"),
]:
    case(f"path-{_id}", req("GET", _target), {400, 404}, PATH_ERRORS)
case("path-cancel-no-such-job", req("POST", "/jobs/no-such-job/cancel"), 404, PATH_ERRORS)
case("path-cancel-finished-job", req("POST", "/jobs/{job}/cancel"), 409, {"already_finished"})

# ----- methods -----------------------------------------------------------------------------------------------------

for _method, _target in [("PUT", "/jobs"), ("DELETE", "/jobs"), ("PATCH", "/jobs"), ("PUT", "/health"),
                         ("POST", "/health"), ("DELETE", "/health"), ("DELETE", "/jobs/{job}"),
                         ("PATCH", "/jobs/{job}"), ("PUT", "/jobs/{job}/cancel"), ("GET", "/jobs/{job}/cancel"),
                         ("POST", "/jobs/{job}/events"), ("DELETE", "/jobs/{job}/files/model.glb"),
                         ("PUT", "/jobs/{job}/files/model.glb"), ("TRACE", "/health")]:
    _slug = _target.strip("/").replace("{job}", "id").replace("/", "-").replace(".", "-")
    _body = b"glTF" if _method == "PUT" else b""
    case(f"method-{_method.lower()}-{_slug}", req(_method, _target, (), _body), 405, METHOD)
case("method-unknown-token", req("FOO", "/health"), {400, 405}, METHOD | {"bad_request"})

assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


# ----- the server and the checks ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctx(tmp_path_factory, cpu_settings, start_server):
    """One server (fake runner) with one finished job (an upload and a GLB to aim traversal at)."""
    import orbitmesh

    folder = tmp_path_factory.mktemp("fuzz")
    settings = cpu_settings(folder)
    server = start_server(settings, ServerConfig(port=0, max_upload_bytes=UPLOAD_LIMIT), runner=fake_run)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        bare = Ctx(port, "", server.manager.root, ())
        resp = exchange(port, post_form(IMAGE, SETTINGS)(bare))
        assert resp is not None and resp.status == 202, resp
        job_id = json.loads(resp.body)["id"]
        for _ in range(200):
            job = json.loads(exchange(port, req("GET", f"/jobs/{job_id}")(bare)).body)
            if job["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.05)
        assert job["status"] == "done" and "model.glb" in job["files"], job
        home = str(Path.home())
        forbidden = tuple(p for p in {str(folder), str(folder.resolve()), str(server.manager.root.resolve()),
                                      str(Path(orbitmesh.__file__).resolve().parents[1]),
                                      home if len(home) > 1 else ""} if p)
        yield Ctx(port, job_id, server.manager.root, forbidden)
    finally:
        server.close()


def _listing(root: Path) -> set[str]:
    return set(os.listdir(root))


def check_answer(c: Case, resp: Response | None, forbidden: tuple[str, ...]) -> None:
    if resp is None:
        assert c.silent_ok, "the server closed the connection without an answer"
        return
    assert resp.status is not None, f"no HTTP/1.x status line in the answer: {resp.raw[:300]!r}"
    text = resp.body.decode("utf-8", "replace")
    assert resp.status != 422 and resp.status < 500, f"status {resp.status}: {text[:500]}"
    assert resp.status in c.statuses, f"status {resp.status}, expected one of {sorted(c.statuses)}: {text[:500]}"
    try:
        body = json.loads(resp.body)
    except ValueError:
        body = None
    if body is None:
        # Only the HTTP parser's own refusals of unparseable framing may answer without JSON.
        assert c.framing and resp.status == 400, f"a non-JSON answer: {resp.header('content-type')} {text[:300]!r}"
    else:
        assert isinstance(body, dict) and "detail" not in body, f"FastAPI's default error shape: {text[:500]}"
        assert set(body) == {"error", "message", "fix"}, f"keys {sorted(body)}: {text[:500]}"
        assert isinstance(body["error"], str) and isinstance(body["message"], str), body
        assert body["fix"] is None or isinstance(body["fix"], str), body
        assert (resp.header("content-type") or "").startswith("application/json"), resp.headers
        if c.errors is not None:
            assert body["error"] in c.errors, f"error {body['error']!r}, expected one of {sorted(c.errors)}: {body}"
    for path in forbidden:
        assert path not in text, f"the answer names the server path {path!r}: {text[:500]}"


def check_still_serving(ctx: Ctx) -> None:
    resp = exchange(ctx.port, req("GET", "/health")(ctx))
    assert resp is not None and resp.status == 200, f"/health after the case: {resp}"
    assert json.loads(resp.body)["status"] == "ok"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_fuzz_case_is_refused_cleanly(ctx, c: Case):
    before = _listing(ctx.jobs_root)
    problems = []
    try:
        check_answer(c, exchange(ctx.port, c.build(ctx), c.end), ctx.forbidden)
    except AssertionError as exc:
        problems.append(str(exc).split("\nassert ")[0])
    created = _listing(ctx.jobs_root) - before
    if created:
        problems.append(f"a refused request left {sorted(created)} in the jobs folder")
    try:
        check_still_serving(ctx)
    except AssertionError as exc:
        problems.append(str(exc).split("\nassert ")[0])
    assert not problems, "; ".join(problems)


# Controls: the same server accepts the well-formed neighbours of the refused cases, so the refusals above are
# about the fuzzed part and not a server that refuses everything.
CONTROLS = [
    ("health-loopback-origin", req("GET", "/health", (("Origin", "http://127.0.0.1:{port}"),)), 200),
    ("health-localhost-host", req("GET", "/health", (("Host", "localhost:{port}"),), host=None), 200),
    ("health-http10-no-host", req("GET", "/health", host=None, version="HTTP/1.0"), 200),
    ("file-upload", req("GET", "/jobs/{job}/files/upload.png"), 200),
    ("file-glb", req("GET", "/jobs/{job}/files/model.glb"), 200),
    ("job-json", post_json(_job_body), 202),
    ("job-form", post_form(IMAGE, SETTINGS), 202),
    ("job-form-jpeg-named-txt", post_form(("image", "chair.txt", JPEG), SETTINGS), 202),
]


@pytest.mark.parametrize("build, status", [c[1:] for c in CONTROLS], ids=[c[0] for c in CONTROLS])
def test_well_formed_controls_are_accepted(ctx, build, status):
    before = _listing(ctx.jobs_root)
    resp = exchange(ctx.port, build(ctx))
    assert resp is not None and resp.status == status, resp
    if status == 202:  # an accepted job is a new folder (the counterpart of the refusals' "no folder" check)
        assert _listing(ctx.jobs_root) - before == {json.loads(resp.body)["id"]}
    if b"model.glb" in build(ctx).split(b"\r\n", 1)[0]:
        assert resp.body == GLB
