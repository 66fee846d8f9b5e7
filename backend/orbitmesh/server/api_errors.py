"""The one error type the HTTP layer turns into ``{"error", "message", "fix"}`` with a status code."""

from __future__ import annotations

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
