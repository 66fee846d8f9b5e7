"""The local executor: jobs run in this process, one at a time; models stay loaded between jobs (the registry's
cache), so a batch or a server pays the model load once."""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orbitmesh.pipeline.request import GenerateRequest, GenerateResult
    from orbitmesh.progress import ProgressTracker
    from orbitmesh.settings import Settings


def worker_id(kind: str = "local") -> str:
    """``<kind>:<host>:<pid>``: which process ran a job (batch.json, the server's job record)."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


def run_generate(request: GenerateRequest, settings: Settings, tracker: ProgressTracker) -> GenerateResult:
    """The real pipeline in this process (imported at the first job: torch stays out of startup)."""
    from orbitmesh.pipeline.generate import generate

    result = generate(request, settings=settings, progress=tracker)
    result.worker = worker_id()
    return result


class LocalExecutor:
    name = "local"
    workers = 1

    def __init__(self) -> None:
        self._one_at_a_time = threading.Lock()  # one device, one job: callers may use several threads anyway

    def run(self, request: GenerateRequest, settings: Settings, tracker: ProgressTracker) -> GenerateResult:
        with self._one_at_a_time:
            return run_generate(request, settings, tracker)

    def close(self) -> None:
        pass
