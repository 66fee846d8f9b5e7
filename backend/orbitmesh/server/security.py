"""Security checks: which address we may bind, the bearer token, request origins, safe names.

The server is a local tool: by default it binds loopback only and trusts nobody else.
Binding any other address needs ``--allow-remote`` *and* a token. Browsers are kept out
too: a web page may POST a form to 127.0.0.1 (no CORS preflight for multipart), so a
request carrying a foreign or ``null`` ``Origin`` is refused, and a foreign ``Host`` (DNS rebinding)
is refused while we listen on loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import socket
from urllib.parse import unquote, urlsplit

from orbitmesh.errors import InputError
from orbitmesh.server.api_errors import ApiError, bad_request

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
# Job ids and artefact names: one path segment, no leading dot, nothing a shell or a
# file system could read as structure.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]")
    if not host:
        return False  # "" means every interface
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a host name: all of its addresses must be loopback
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_bind(host: str, *, allow_remote: bool, token: str | None) -> None:
    """Refuse a non-loopback bind unless ``--allow-remote`` and a token were both given."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise InputError(f"refusing to listen on {host!r}: it is not a loopback address, so other "
                         "machines could submit jobs and read results",
                         fix="use --host 127.0.0.1, or pass --allow-remote together with --token "
                             "(or ORBITMESH_TOKEN) to accept authenticated remote clients")
    if not token:
        raise InputError(f"--allow-remote on {host!r} needs a token",
                         fix="pass --token SECRET or set ORBITMESH_TOKEN; clients send "
                             "'Authorization: Bearer SECRET'")
    if len(token) < 16:
        raise InputError("the token is too short for a server other machines can reach",
                         fix="use at least 16 random characters, e.g. python -c \"import secrets; "
                             "print(secrets.token_urlsafe(24))\"")


def check_token(authorization: str | None, token: str | None) -> None:
    """Raise 401 unless ``Authorization: Bearer <token>`` matches (constant-time compare)."""
    if not token:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong access token",
                       fix="send the header 'Authorization: Bearer <token>' with the server's token")


def _host_part(value: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:80' -> '::1'."""
    value = value.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def check_origin(headers, *, loopback_only: bool) -> None:
    """Refuse browser requests from web pages (foreign Origin) and DNS-rebinding Host names."""
    origin = headers.get("Origin")
    if origin is not None:  # "null" too: sandboxed iframes and some redirects send it, from any web page
        host = urlsplit(origin).hostname or ""
        if not (loopback_only and _is_literal_loopback(host)):
            raise ApiError(403, "forbidden_origin", f"requests from web pages ({origin}) are not accepted",
                           fix="call the API from a script or the Blender add-on, not from a browser page")
    if loopback_only:
        host = _host_part(headers.get("Host") or "127.0.0.1")
        if not _is_literal_loopback(host):
            raise ApiError(403, "forbidden_host", f"Host {host!r} is not a loopback name",
                           fix="connect to http://127.0.0.1:<port>/ or http://localhost:<port>/")


def _is_literal_loopback(host: str) -> bool:
    """Loopback without DNS (a rebinding attacker controls DNS): literal IPs and 'localhost'."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def path_segments(raw_path: str) -> list[str]:
    """Split the request path into decoded segments, refusing traversal in any encoding.

    Splitting happens *before* percent-decoding, so ``%2F`` cannot create a segment, and a
    decoded segment holding a slash, backslash, NUL or ``.``/``..`` is a 400.
    """
    path = urlsplit(raw_path).path
    if not path.startswith("/"):
        raise bad_request(f"bad request path {raw_path!r}", fix="use an absolute path such as /jobs")
    segments = []
    for raw in path.split("/")[1:]:
        try:
            seg = unquote(raw, errors="strict") if "%" in raw else raw
        except UnicodeDecodeError:
            raise bad_request(f"path segment {raw!r} is not valid UTF-8", code="unsafe_path") from None
        if seg in (".", "..") or any(c in seg for c in "/\\\x00") or any(ord(c) < 32 for c in seg):
            raise bad_request(f"unsafe path segment {seg!r}", fix="name a job id or a file listed in the job",
                              code="unsafe_path")
        segments.append(seg)
    while segments and segments[-1] == "":  # tolerate one trailing slash: /jobs/
        segments.pop()
    return segments


def check_name(name: str, what: str) -> str:
    """A job id or file name must be one safe path segment (see :data:`SAFE_NAME`)."""
    if not SAFE_NAME.match(name) or ".." in name:
        raise bad_request(f"invalid {what} {name!r}", fix=f"use a {what} exactly as the server listed it",
                          code="unsafe_path")
    return name


def check_upload_filename(filename: str | None) -> None:
    """A client's upload file name is never used as a path, but one that tries traversal is refused."""
    if filename is None:
        return
    if (filename in (".", "..") or any(c in filename for c in "/\\:\x00")
            or any(ord(c) < 32 for c in filename) or len(filename) > 255):
        raise bad_request(f"unsafe upload file name {filename!r}",
                          fix="send a plain file name such as 'chair.png' (no folders, no '..')",
                          code="unsafe_filename")
