"""Error types. Every error a user can cause says what is wrong and how to fix it."""

from __future__ import annotations


class OrbitMeshError(Exception):
    """Base class for every error OrbitMesh raises on purpose.

    ``fix`` is a one-line hint shown after the message (CLI, server JSON, add-on report).
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message} (fix: {fix})")

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, "fix": self.fix}


class InputError(OrbitMeshError, ValueError):
    """Bad user input: an image, a prompt, a setting, a field array."""


class ModelError(OrbitMeshError):
    """A model is missing, the wrong kind, or its checkpoint does not match the architecture."""


class LicenceError(ModelError):
    """A job under ``commercial_only`` names a model whose licence does not allow commercial use."""


class JobCancelled(OrbitMeshError):
    """Raised from the progress callback when the user cancelled the job."""

    def __init__(self, message: str = "job cancelled by the user") -> None:
        super().__init__(message)
