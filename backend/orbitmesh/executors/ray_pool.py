"""A pool of Ray worker actors: each holds one device with its models loaded and kept warm between jobs.

``RayExecutor.start("local" | "auto" | ADDRESS, workers=N)`` joins (or starts) a Ray cluster and creates N
:class:`GenerateWorker` actors (``num_gpus=1`` each where the cluster has GPUs, else one CPU each). ``run()`` is
the executor contract: it takes a free actor (FIFO among waiting callers), sends the request and the input image's
bytes (no shared storage is assumed), relays the actor's progress into the caller's tracker every
``POLL_S`` and a cancel back to the actor (it stops at the job's next progress step), and writes the job folder
the actor returns into the caller's ``settings.output_dir``. An actor that dies under a job (killed, out of
memory, its node gone) is replaced and the job raises :class:`~orbitmesh.errors.WorkerLost`; the caller's retry
rule (:data:`orbitmesh.jobs.MAX_ATTEMPTS`) runs it again on another worker.

Ray is optional (``pip install "orbitmesh[ray]"``): this module imports it only when a pool starts.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import traceback
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orbitmesh import atomic
from orbitmesh.errors import InputError, JobCancelled, JobInterrupted, OrbitMeshError, WorkerLost
from orbitmesh.executors.base import RAY_INSTALL
from orbitmesh.executors.local import worker_id
from orbitmesh.pipeline.request import GenerateRequest, GenerateResult
from orbitmesh.progress import ProgressTracker
from orbitmesh.settings import Settings

log = logging.getLogger("orbitmesh.ray")

POLL_S = 0.2  # how often a busy job's progress is fetched from its actor
DEFAULT_CPU_WORKERS = 2
ACTOR_CONCURRENCY = 4  # run() plus progress()/cancel() calls answered while it runs


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed here", fix=RAY_INSTALL) from None
    return ray


def connect(address: str, workers: int | None = None) -> None:
    """Join the cluster at ``address`` ("auto": the one Ray finds via RAY_ADDRESS or a head on this machine), or
    start a local instance ("local": enough CPUs for ``workers``). A no-op when this process is connected."""
    ray = import_ray()
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            import os

            ray.init(num_cpus=max(workers or DEFAULT_CPU_WORKERS, os.cpu_count() or 1), **options)
        else:
            ray.init(address=address, **options)
    except ConnectionError as exc:
        raise InputError(f"cannot join the Ray cluster at {address!r}: {exc}",
                         fix="start one (`ray start --head` on the head machine, `ray start --address HEAD:6379` on "
                             "the others), set RAY_ADDRESS, or use --ray local") from None


class GenerateWorker:
    """One Ray actor: runs jobs with ``generate`` in its own process (models cached between jobs), one at a time
    (its device), answering ``progress``/``cancel`` while a job runs. Made remote by :meth:`RayExecutor.start`."""

    def __init__(self) -> None:
        import ray

        from orbitmesh.native import preload_native_libraries

        if threading.current_thread() is threading.main_thread():
            preload_native_libraries()
        node = ray.get_runtime_context().get_node_id()[:8]
        self.id = worker_id("ray").replace("ray:", f"ray:{node}:", 1)
        self._jobs: dict[str, ProgressTracker] = {}
        self._one_at_a_time = threading.Lock()

    def ping(self) -> str:
        return self.id

    def run(self, key: str, request: GenerateRequest, settings: Settings, image: bytes | None,
            image_name: str | None) -> dict[str, Any]:
        """Run one job in a temporary folder; return its job folder's files, or how it ended (messages name the
        caller's input path, not the temporary copy)."""
        from orbitmesh.pipeline.generate import generate

        tracker = self._jobs.setdefault(key, ProgressTracker())
        tmp = Path(tempfile.mkdtemp(prefix="orbitmesh-ray-"))
        caller_path = request.image_path
        local = lambda text: text.replace(request.image_path, caller_path) if text and caller_path else text
        try:
            with self._one_at_a_time:
                tracker.raise_if_cancelled()  # cancelled while it waited for the device
                if image is not None:
                    path = tmp / "input" / (image_name or "image.png")
                    atomic.write_bytes(path, image)
                    request.image_path = str(path)
                request.output = None
                result = generate(request, settings=settings.override(output_dir=tmp / "jobs"), progress=tracker)
            files = {str(p.relative_to(result.job_dir)): p.read_bytes()
                     for p in sorted(result.job_dir.rglob("*")) if p.is_file()}
            return {"status": "done", "job": result.job_dir.name, "files": files, "worker": self.id,
                    "glb": result.glb_path.name, "model": result.model, "timings": result.timings,
                    "stats": result.stats, "warnings": result.warnings, "licences": result.licences}
        except JobCancelled as exc:
            return {"status": "cancelled", "interrupted": isinstance(exc, JobInterrupted), "message": exc.message,
                    "worker": self.id}
        except OrbitMeshError as exc:
            return {"status": "failed", "type": type(exc).__name__, "message": local(exc.message),
                    "fix": local(exc.fix), "worker": self.id}
        except Exception as exc:  # a bug in a job: reported to the caller, the actor keeps serving
            return {"status": "failed", "type": type(exc).__name__, "message": local(f"{type(exc).__name__}: {exc}"),
                    "fix": "this is a bug: please report it with the server log",
                    "traceback": traceback.format_exc(limit=20), "worker": self.id}
        finally:
            self._jobs.pop(key, None)
            shutil.rmtree(tmp, ignore_errors=True)

    def progress(self, key: str) -> dict[str, Any] | None:
        """The job's plan and latest progress event (None before its first one)."""
        tracker = self._jobs.get(key)
        if tracker is None or tracker.latest is None:
            return None
        return {"stages": tracker.stages, "weights": tracker.weights, "event": asdict(tracker.latest)}

    def cancel(self, key: str, interrupted: bool = False) -> None:
        """Stop the job at its next progress step (registered first if it has not started)."""
        tracker = self._jobs.setdefault(key, ProgressTracker())
        tracker.cancel(JobInterrupted() if interrupted else None)


class RayExecutor:
    """The executor over a pool of :class:`GenerateWorker` actors (see the module docstring)."""

    name = "ray"

    def __init__(self, ray, workers: int, actor_options: dict[str, Any]) -> None:
        self._ray = ray
        self._remote = ray.remote(GenerateWorker)
        self._options = actor_options
        self.workers = workers
        self._actors = [self._new_actor() for _ in range(workers)]
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(workers):
            self._free.put(slot)
        self.replaced = 0
        self._busy: dict[int, str] = {}  # slot -> key of the job it runs
        # Wait until every actor is up (imports done), so the first jobs do not pay for it one by one.
        self.worker_ids = ray.get([actor.ping.remote() for actor in self._actors])

    @classmethod
    def start(cls, address: str, *, workers: int | None = None) -> RayExecutor:
        """Connect (see :func:`connect`) and start ``workers`` actors: default one per GPU of the cluster, else
        DEFAULT_CPU_WORKERS CPU workers."""
        ray = import_ray()
        connect(address, workers)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = workers or gpus or DEFAULT_CPU_WORKERS
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        return cls(ray, count, {**options, "max_concurrency": ACTOR_CONCURRENCY, "max_restarts": 0})

    def _new_actor(self):
        return self._remote.options(**self._options).remote()

    def run(self, request: GenerateRequest, settings: Settings, tracker: ProgressTracker) -> GenerateResult:
        slot = self._take_slot(tracker)
        try:
            return self._run_on(slot, request, settings, tracker)
        finally:
            self._free.put(slot)

    def _take_slot(self, tracker: ProgressTracker) -> int:
        while True:  # FIFO among waiting callers; a cancel while waiting ends the wait
            tracker.raise_if_cancelled()
            try:
                return self._free.get(timeout=POLL_S)
            except queue.Empty:
                continue

    def _run_on(self, slot: int, request: GenerateRequest, settings: Settings,
                tracker: ProgressTracker) -> GenerateResult:
        ray = self._ray
        tracker.raise_if_cancelled()  # cancelled while it waited for a free worker
        actor = self._actors[slot]
        key = uuid.uuid4().hex
        image = Path(request.image_path).read_bytes() if request.image_path else None
        name = Path(request.image_path).name if request.image_path else None
        ref = actor.run.remote(key, request, settings, image, name)
        cancel_sent = False
        self._busy[slot] = key
        try:
            while not ray.wait([ref], timeout=POLL_S)[0]:
                try:
                    self._relay_progress(actor, key, tracker)
                except JobCancelled as exc:
                    if not cancel_sent:
                        actor.cancel.remote(key, isinstance(exc, JobInterrupted))
                        cancel_sent = True
            out = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            self._actors[slot] = self._new_actor()  # the pool replaces the dead worker
            self.replaced += 1
            raise WorkerLost(f"the Ray worker running this job died ({type(exc).__name__})",
                             fix="it runs again on another worker; if it keeps dying, look for out-of-memory "
                                 "kills on the worker machine or lower mc_resolution/texture_size") from None
        finally:
            self._busy.pop(slot, None)
        return self._result(out, request, settings)

    def busy_slots(self) -> list[int]:
        """The pool slots running a job now (``actor(slot)`` is the actor)."""
        return sorted(self._busy)

    def actor(self, slot: int):
        return self._actors[slot]

    def _relay_progress(self, actor, key: str, tracker: ProgressTracker) -> None:
        """The actor's latest event into ``tracker`` (which raises JobCancelled when the caller cancelled)."""
        try:
            info = self._ray.get(actor.progress.remote(key), timeout=10)
        except Exception:  # the actor is busy or gone: the run's own result says which
            info = None
        if info is None:
            tracker.raise_if_cancelled()
            return
        if not tracker.stages and info["stages"]:
            tracker.plan(info["stages"], info["weights"])
        event = info["event"]
        tracker(event["stage"], event["step"], event["total"], event["message"])

    def _result(self, out: dict[str, Any], request: GenerateRequest, settings: Settings) -> GenerateResult:
        error: OrbitMeshError | None = None
        if out["status"] == "cancelled":
            error = JobInterrupted(out["message"]) if out["interrupted"] else JobCancelled(out["message"])
        elif out["status"] == "failed":
            if out.get("traceback"):
                log.error("job failed on %s:\n%s", out["worker"], out["traceback"])
            error = OrbitMeshError(out["message"], fix=out.get("fix"))
        if error is not None:
            error.worker = out["worker"]  # which worker it ended on (batch.json names it)
            raise error
        job_dir = Path(settings.output_dir) / out["job"]
        for rel, data in out["files"].items():  # the job folder comes back to the caller's machine
            atomic.write_bytes(job_dir / rel, data)
        return GenerateResult(job_dir=job_dir, glb_path=job_dir / out["glb"], request=request, model=out["model"],
                              timings=out["timings"], stats=out["stats"], warnings=out["warnings"],
                              licences=out["licences"], worker=out["worker"])

    def close(self) -> None:
        for actor in self._actors:
            try:
                self._ray.kill(actor)
            except Exception:
                pass
        self._actors = []
