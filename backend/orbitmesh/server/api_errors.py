"""The one error type the HTTP layer turns into ``{"error", "message", "fix"}`` with a status code."""

from __future__ import annotations

import os
import re

from orbitmesh.errors import OrbitMeshError


class ApiError(OrbitMeshError):
    """An error answered as JSON: ``status`` is the HTTP code, ``code`` a stable snake_case name."""

    def __init__(self, status: int, code: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.status = status
        self.code = code

    def to_dict(self) -> dict:
        return {"error": self.code, "message": self.message, "fix": self.fix}


def bad_request(message: str, fix: str | None = None, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message, fix=fix)


def not_found(message: str, fix: str | None = None) -> ApiError:
    return ApiError(404, "not_found", message, fix=fix)


# An absolute POSIX path (two or more segments) or a Windows drive path, not part of a URL or a MIME type.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])(/[\w.@+-]+(?:/[\w.@+ -]*[\w.@+-])+|[A-Za-z]:\\[^\s'\"]+)")


def redact_paths(text: str | None, named: dict[str, str] | None = None) -> str | None:
    """``text`` without absolute server paths: each folder in ``named`` ({path: label}, e.g. the jobs folder ->
    "<jobs>") becomes its label, any other absolute path on this machine its last segment. API paths such as
    ``/jobs/{id}`` are kept (their first segment is no folder at the file system's root)."""
    if not text:
        return text
    for path, label in sorted((named or {}).items(), key=lambda item: -len(item[0])):
        if path and path != "/":
            text = text.replace(path, label)

    def short(match: re.Match) -> str:
        found = match.group(0)
        if found[1:2] == ":" or os.path.isdir("/" + found.split("/")[1]):
            return re.split(r"[\\/]", found.rstrip("/\\"))[-1]
        return found

    return _ABSOLUTE_PATH.sub(short, text)
