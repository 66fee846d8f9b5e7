"""Request bodies: a bounded reader and a small, strict ``multipart/form-data`` parser.

The standard library's ``cgi`` module is deprecated (and removed in 3.13), and
``email.parser`` is lenient by design; uploads here are tiny forms with known fields,
so a strict parser is short: known field names only, no duplicates, no nested
multiparts, a closing delimiter required. The size limit is enforced from
``Content-Length`` before anything is read, and the reader never reads past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import BinaryIO, Mapping

from orbitmesh.server.api_errors import ApiError, bad_request

CHUNK = 1 << 16
# An over-limit body is read and thrown away up to this many bytes before answering 413,
# so the client sees the JSON error instead of a connection reset; beyond it we just close.
DRAIN_MAX = 64 << 20
MAX_PARTS = 8
MAX_PART_HEADER = 4096


@dataclass
class Part:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """'multipart/form-data; boundary=xyz' -> ('multipart/form-data', {'boundary': 'xyz'})."""
    msg = Message()
    msg["content-type"] = value or ""
    mime = msg.get_content_type() if value else ""
    params = {k.lower(): v for k, v in (msg.get_params() or [])[1:]}
    return mime, params


def read_body(rfile: BinaryIO, headers: Mapping[str, str], limit: int) -> bytes:
    """Read exactly Content-Length bytes, at most ``limit``; 411/400/413 errors otherwise."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        raise ApiError(411, "length_required", "chunked uploads are not accepted",
                       fix="send the body with a Content-Length header")
    raw = headers.get("Content-Length")
    if raw is None:
        raise ApiError(411, "length_required", "the request has no Content-Length",
                       fix="send the body with a Content-Length header")
    try:
        length = int(raw)
        if length < 0:
            raise ValueError
    except ValueError:
        raise bad_request(f"bad Content-Length {raw!r}", fix="send the body's size in bytes") from None
    if length > limit:
        _discard(rfile, min(length, DRAIN_MAX))
        raise ApiError(413, "payload_too_large",
                       f"the upload is {length / 2**20:.1f} MB, over the server's limit of {limit / 2**20:.1f} MB",
                       fix="send a smaller image, or restart the server with a larger --max-upload-mb")
    chunks, left = [], length
    while left:
        data = rfile.read(min(CHUNK, left))
        if not data:
            raise bad_request(f"the body ended after {length - left} of {length} bytes",
                              fix="send the whole body (the upload was cut off)", code="truncated_body")
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def _discard(rfile: BinaryIO, n: int) -> None:
    try:
        while n > 0:
            data = rfile.read(min(CHUNK, n))
            if not data:
                return
            n -= len(data)
    except OSError:  # the client gave up or the socket timed out: the 413 still goes out if it can
        return


def _malformed(detail: str) -> ApiError:
    return bad_request(f"malformed multipart body: {detail}",
                       fix="send a standard multipart/form-data request (e.g. curl -F image=@file.png)",
                       code="malformed_multipart")


def parse_form(body: bytes, content_type: str | None, *, allowed: tuple[str, ...]) -> dict[str, Part]:
    """Parse a multipart/form-data body into ``{field name: Part}``.

    Only ``allowed`` field names are accepted, each at most once; the closing delimiter
    must be present (a truncated upload is a 400, not half an image).
    """
    mime, params = parse_content_type(content_type)
    boundary = params.get("boundary", "")
    if mime != "multipart/form-data" or not 1 <= len(boundary) <= 70:
        raise _malformed("missing or invalid boundary in Content-Type")
    delim = b"--" + boundary.encode("latin-1")
    if body.startswith(delim):
        pos = len(delim)
    else:  # an optional preamble ends with CRLF before the first delimiter
        start = body.find(b"\r\n" + delim)
        if start < 0:
            raise _malformed("no part delimiter found")
        pos = start + 2 + len(delim)
    parts: dict[str, Part] = {}
    while True:
        if body[pos:pos + 2] == b"--":
            break  # closing delimiter; anything after it is an epilogue and ignored
        if body[pos:pos + 2] != b"\r\n":
            raise _malformed("bad delimiter line")
        pos += 2
        end = _find_delimiter(body, b"\r\n" + delim, pos)
        if end < 0:
            raise _malformed("the closing delimiter is missing (truncated upload?)")
        part = _parse_part(body[pos:end])
        if part.name not in allowed:
            raise bad_request(f"unknown form field {part.name!r}",
                              fix=f"use only the fields {', '.join(repr(a) for a in allowed)}",
                              code="unknown_field")
        if part.name in parts:
            raise bad_request(f"form field {part.name!r} was sent twice", fix="send each field once",
                              code="duplicate_field")
        parts[part.name] = part
        if len(parts) > MAX_PARTS:
            raise _malformed("too many parts")
        pos = end + 2 + len(delim)
    return parts


def _find_delimiter(body: bytes, marker: bytes, pos: int) -> int:
    """Next ``CRLF--boundary`` that is really a delimiter (followed by CRLF or ``--``)."""
    while True:
        end = body.find(marker, pos)
        if end < 0 or body[end + len(marker):end + len(marker) + 2] in (b"\r\n", b"--"):
            return end
        pos = end + 1


def _parse_part(raw: bytes) -> Part:
    head, sep, data = raw.partition(b"\r\n\r\n")
    if not sep:
        if raw.startswith(b"\r\n"):  # headers may be empty
            head, data = b"", raw[2:]
        else:
            raise _malformed("a part has no header/body separator")
    if len(head) > MAX_PART_HEADER:
        raise _malformed("part headers are too long")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("part headers are not UTF-8") from None
    msg = Message()
    for line in text.split("\r\n") if text else []:
        key, colon, value = line.partition(":")
        if not colon or not key.strip() or key != key.strip():
            raise _malformed(f"bad part header line {line[:80]!r}")
        msg[key] = value.strip()
    if msg.get_content_disposition() != "form-data":
        raise _malformed("each part needs 'Content-Disposition: form-data'")
    name = msg.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise _malformed("a part has no field name")
    filename = msg.get_filename()
    return Part(name=name, data=data, filename=filename,
                content_type=msg.get_content_type() if msg.get("content-type") else None)
