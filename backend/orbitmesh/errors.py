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


class JobInterrupted(JobCancelled):
    """The server is stopping (SIGTERM, Ctrl-C): the job stops at its next progress step and stays queued for the
    next start; nobody cancelled it."""

    def __init__(self, message: str = "the server stopped; the job runs again at the next start") -> None:
        super().__init__(message)


class WorkerLost(OrbitMeshError):
    """The worker process running a job died (killed, out of memory, its machine left the cluster). The job
    did nothing wrong: it runs again on another worker, up to :data:`orbitmesh.jobs.MAX_ATTEMPTS` runs."""


class DiskError(OrbitMeshError):
    """A write failed because the disk is full, read-only or not writable (never a bug: the fix is the
    operator's). ``reason`` is "full", "read_only" or "not_writable"."""

    def __init__(self, message: str, *, fix: str | None = None, reason: str = "not_writable") -> None:
        super().__init__(message, fix=fix)
        self.reason = reason


# errno -> (reason, what the folder is), for DiskError.from_os_error
_DISK_ERRNOS = {"ENOSPC": ("full", "full (no space left on the device)"),
                "EDQUOT": ("full", "over its disk quota"),
                "EROFS": ("read_only", "on a read-only file system"),
                "EACCES": ("not_writable", "not writable (permission denied)"),
                "EPERM": ("not_writable", "not writable (operation not permitted)")}


def disk_error(exc: OSError, what: str, fix: str) -> DiskError | None:
    """The DiskError for a failed write to ``what`` (e.g. "the jobs folder"), or None when ``exc`` is not a disk
    condition (then it is a bug or another I/O problem, and the caller re-raises it). No path in the message:
    servers send it to clients."""
    import errno

    for name, (reason, text) in _DISK_ERRNOS.items():
        if exc.errno == getattr(errno, name, None):
            return DiskError(f"{what} is {text}", fix=fix, reason=reason)
    return None
