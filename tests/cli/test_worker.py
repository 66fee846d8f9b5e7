"""``orbitmesh worker``: the add-on's warm In-Blender backend, JSON lines on stdin/stdout.

The request loop (:class:`orbitmesh.cli.worker.Worker`) runs here with a stand-in pipeline that only
reports progress (cancel, queue, idle release and exit, shutdown); one real worker process runs a
tiny-random job end to end (tests/addon/test_warm_worker.py drives it through the add-on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orbitmesh.cli.worker import Worker
from orbitmesh.settings import Settings


class FakeResult:
    def __init__(self, name: str) -> None:
        self.name = name

    def to_dict(self) -> dict:
        return {"glb_path": f"/jobs/{self.name}.glb"}


def stand_in(steps: int, delay: float = 0.0):
    """A runner reporting ``steps`` progress steps (``delay`` s apart) for a request; records what it ran."""
    ran: list[str] = []

    def run(request, settings, tracker):
        ran.append(request.prompt)
        for step in range(steps):
            tracker("lrm", step, steps, f"step {step}")
            time.sleep(delay)
        return FakeResult(request.prompt)

    run.ran = ran
    return run


class Events:
    """The worker's events as they are emitted; ``next(kind)`` waits for the first one of that kind not yet taken."""

    def __init__(self) -> None:
        self.all: list[dict] = []
        self._cond = threading.Condition()
        self._taken: set[int] = set()

    def __call__(self, event: dict) -> None:
        json.dumps(event)  # every event is JSON
        with self._cond:
            self.all.append(event)
            self._cond.notify_all()

    def _find(self, kind: str) -> int | None:
        return next((i for i, e in enumerate(self.all) if i not in self._taken and e["event"] == kind), None)

    def next(self, kind: str, timeout: float = 10.0) -> dict:
        with self._cond:
            assert self._cond.wait_for(lambda: self._find(kind) is not None, timeout), (kind, self.all)
            index = self._find(kind)
            self._taken.add(index)
            return self.all[index]


def start(tmp_path: Path, runner, **kw) -> tuple[Worker, Events, threading.Thread, list]:
    events = Events()
    released: list[float] = []

    def release() -> bool:
        released.append(time.monotonic())
        return True

    worker = Worker(Settings(model_dir=tmp_path / "models", output_dir=tmp_path / "jobs", device="cpu"), events,
                    runner=runner, release=release, **kw)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(worker.serve()), daemon=True)
    thread.start()
    thread.result = result
    return worker, events, thread, released


def submit(worker: Worker, job_id: str, **extra) -> None:
    worker.take(json.dumps({"op": "submit", "id": job_id, "prompt": job_id, "settings": {"seed": 3}, **extra}))


def test_jobs_run_in_order_and_a_cancel_stops_the_running_one_at_its_next_step(tmp_path):
    runner = stand_in(steps=200, delay=0.01)
    worker, events, thread, _ = start(tmp_path, runner, idle_exit_s=0)
    assert events.next("ready")["pid"] == os.getpid()
    submit(worker, "a")
    submit(worker, "b")
    assert events.next("started")["id"] == "a"
    first = events.next("progress")
    assert first["id"] == "a" and first["stage"] == "lrm" and first["total"] == 200
    worker.take(json.dumps({"op": "cancel", "id": "a"}))
    assert events.next("cancelled")["id"] == "a"
    assert len([e for e in events.all if e["event"] == "progress" and e["id"] == "a"]) < 200  # stopped early
    assert events.next("started")["id"] == "b"  # the next job runs in the same process
    assert events.next("done", timeout=20) == {"event": "done", "id": "b", "result": {"glb_path": "/jobs/b.glb"}}
    assert runner.ran == ["a", "b"]
    worker.take('{"op": "shutdown"}')
    thread.join(5)
    assert thread.result == ["shutdown"] and events.all[-1] == {"event": "exit", "reason": "shutdown"}


def test_a_queued_job_cancelled_never_runs_and_bad_requests_are_answered(tmp_path):
    runner = stand_in(steps=30, delay=0.01)
    worker, events, thread, _ = start(tmp_path, runner, idle_exit_s=0)
    submit(worker, "a")
    submit(worker, "b")
    worker.take(json.dumps({"op": "cancel", "id": "b"}))
    worker.take("not json")
    worker.take(json.dumps({"op": "explode", "id": "x"}))
    submit(worker, "c", settings={"seed": -1})  # out of range: the job fails, the worker goes on
    submit(worker, "d", settings={"colour": "red"})  # not a setting
    bad = [events.next("error"), events.next("error")]
    assert bad[0]["id"] is None and "not a worker request" in bad[0]["message"] and "submit" in bad[0]["fix"]
    assert bad[1]["id"] == "x" and bad[1]["fix"]
    assert events.next("done")["id"] == "a"
    assert events.next("cancelled")["id"] == "b"
    seed, unknown = events.next("error"), events.next("error")
    assert seed["id"] == "c" and "seed" in seed["message"] and seed["fix"]
    assert unknown["id"] == "d" and "colour" in unknown["message"]
    assert runner.ran == ["a"]  # b was dropped from the queue, c and d never reached the pipeline
    worker.stop("eof")
    thread.join(5)
    assert thread.result == ["eof"]


def test_idle_release_then_idle_exit(tmp_path):
    worker, events, thread, released = start(tmp_path, stand_in(steps=2), idle_exit_s=1.2, release_after_s=0.4)
    t0 = time.monotonic()
    submit(worker, "a")
    assert events.next("done")["id"] == "a"
    done_at = time.monotonic()
    assert events.next("released") == {"event": "released", "reason": "idle", "models": True}
    assert events.next("exit", timeout=5) == {"event": "exit", "reason": "idle"}
    thread.join(5)
    assert thread.result == ["idle"] and len(released) == 1
    assert 0.35 <= released[0] - done_at < 1.0  # the shorter threshold, counted from the job's end
    assert 1.1 <= time.monotonic() - done_at < 4.0 and time.monotonic() - t0 < 6.0


def test_shutdown_cancels_the_running_job_and_drops_the_queued_ones(tmp_path):
    worker, events, thread, _ = start(tmp_path, stand_in(steps=500, delay=0.01), idle_exit_s=0)
    submit(worker, "a")
    submit(worker, "b")
    events.next("progress")
    worker.take('{"op": "shutdown"}')
    assert events.next("cancelled")["id"] == "a"
    assert events.next("cancelled")["id"] == "b"
    assert events.next("exit") == {"event": "exit", "reason": "shutdown"}
    thread.join(5)
    assert not thread.is_alive()


def test_release_on_request(tmp_path):
    worker, events, thread, released = start(tmp_path, stand_in(steps=1), idle_exit_s=0)
    worker.take('{"op": "release"}')
    assert events.next("released") == {"event": "released", "reason": "asked", "models": True}
    assert len(released) == 1
    worker.stop("shutdown")
    thread.join(5)


@pytest.mark.slow
def test_worker_process_runs_a_tiny_random_job(tmp_path, object_image):
    """The real command: only JSON lines on stdout, the job's id on its events, job.json records the worker's
    pid, release frees the cached model, end of stdin ends the process."""
    image = tmp_path / "object.png"
    object_image().save(image)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ORBITMESH_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.Popen([sys.executable, "-m", "orbitmesh", "worker", "--device", "cpu", "--idle-exit", "120"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, bufsize=1)
    settings = {"model": "tiny-random", "mc_resolution": 40, "target_faces": 600, "texture_size": 128}
    proc.stdin.write(json.dumps({"op": "submit", "id": "j1", "image_path": str(image), "settings": settings,
                                 "output_dir": str(tmp_path / "jobs"), "output": str(tmp_path / "copy.glb")}) + "\n")
    proc.stdin.flush()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if '"done"' in line or '"error"' in line:
            break
    proc.stdin.write('{"op": "release"}\n')
    proc.stdin.flush()
    lines.append(proc.stdout.readline())
    proc.stdin.close()  # end of stdin: the worker exits
    lines += proc.stdout.readlines()
    assert proc.wait(60) == 0, proc.stderr.read()[-3000:]
    events = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    assert events[0]["event"] == "ready" and events[0]["pid"] == proc.pid
    kinds = [e["event"] for e in events]
    assert kinds[1] == "started" and kinds[-3:] == ["done", "released", "exit"], kinds
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["id"] == "j1" for e in progress)
    assert [e["progress"] for e in progress] == sorted(e["progress"] for e in progress)
    result = events[-3]["result"]
    record = json.loads((Path(result["job_dir"]) / "job.json").read_text())
    assert record["status"] == "done" and record["worker_pid"] == proc.pid
    assert Path(result["glb_path"]).is_file() and (tmp_path / "copy.glb").is_file()
    assert Path(result["job_dir"]).parent == tmp_path / "jobs"  # the per-job output folder
    assert events[-2] == {"event": "released", "reason": "asked", "models": True}  # the tiny model was cached
    assert events[-1] == {"event": "exit", "reason": "eof"}
