"""The add-on's warm In-Blender backend (blender_addon/core/worker.py) with a real ``orbitmesh worker`` child
running tiny-random jobs: one child for jobs in a row, a cancel that reaches it, a killed child that fails
only its job, the idle exit, a configuration change. No Blender needed (test_addon_blender.py runs the
operator through it)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from blender_addon.core import backends, session
from blender_addon.core.worker import WarmWorker, WorkerBackend, WorkerConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def make_backend(tmp_path):
    """make_backend(**options) -> a WorkerBackend on the CPU (no user config); every worker is stopped after."""

    def make(**options) -> WorkerBackend:
        options.setdefault("keep_alive_s", 120.0)
        env = {"OMP_NUM_THREADS": "1", "ORBITMESH_CONFIG": str(tmp_path / "none.toml")}
        return WorkerBackend(sys.executable, [], device="cpu", extra_env=env, log_path=str(tmp_path / "worker.log"),
                             **options)

    yield make
    session.stop_workers()


@pytest.fixture
def job(tmp_path, object_image, small_request):
    """job(name, **settings) -> a JobSpec for a fast tiny-random job on an object photo."""
    image = tmp_path / "object.png"
    object_image().save(image)

    def make(name: str, **settings) -> backends.JobSpec:
        return backends.JobSpec(name=name, work_dir=tmp_path / name, image_path=str(image),
                                settings={**small_request, **settings})

    return make


def wait_until(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def job_json(state: backends.JobState) -> dict:
    return json.loads((Path(state.job_dir) / "job.json").read_text())


def folders(spec: backends.JobSpec) -> list[dict]:
    """The job.json of every pipeline job folder inside the job's work folder."""
    return [json.loads(p.read_text()) for p in Path(spec.work_dir).glob("*/job.json")]


def test_jobs_in_a_row_share_one_child_and_a_cancel_reaches_it(make_backend, job):
    backend = make_backend()
    first = backend.submit(job("first", seed=1))
    state = first.wait(300)
    assert state.status == "done", state.error
    pid = first.worker.pid
    assert job_json(state)["worker_pid"] == pid and first.worker.info["pid"] == pid  # job.json names the child
    assert Path(state.glb_path).is_file() and state.version == "0.1.0" and state.progress == 1.0

    second = backend.submit(job("second", seed=2))
    assert second.worker is first.worker
    state = second.wait(300)
    assert state.status == "done", state.error
    assert job_json(state)["worker_pid"] == pid  # the same process ran both

    # A cancel from the panel reaches the running job at its next step; the child lives on.
    spec = job("cancelled")
    third = backend.submit(spec)
    wait_until(lambda: third.state().stage or third.finished, what="the job's first progress event")
    third.request_cancel()
    state = third.wait(60)
    assert state.status == "cancelled" and state.error is None
    assert [r["status"] for r in folders(spec)] == ["cancelled"]  # the job folder says so
    assert list(Path(spec.work_dir).rglob("*.glb")) == []  # no GLB left behind
    assert third.worker.pid == pid and third.worker.alive

    fourth = backend.submit(job("after-cancel"))
    state = fourth.wait(300)
    assert state.status == "done", state.error
    assert job_json(state)["worker_pid"] == pid
    assert "job " in (Path(job("after-cancel").work_dir) / "generate.log").read_text()  # a log per job


def test_a_killed_child_fails_only_its_job_and_the_next_job_starts_a_fresh_one(make_backend, job):
    backend = make_backend()
    spec = job("killed")
    doomed = backend.submit(spec)
    wait_until(lambda: doomed.state().stage or doomed.finished, what="the job's first progress event")
    old_pid = doomed.worker.pid
    os.kill(old_pid, signal.SIGKILL)  # as the out-of-memory killer would
    state = doomed.wait(60)
    assert state.status == "failed"
    assert "killed" in state.error["message"] and "out of memory" in state.error["message"]
    assert state.error["fix"]
    assert not doomed.worker.alive

    after = backend.submit(job("after-kill"))
    state = after.wait(300)
    assert state.status == "done", state.error
    assert after.worker.pid != old_pid and job_json(state)["worker_pid"] == after.worker.pid


def test_the_idle_timeout_ends_the_child(make_backend, tmp_path):
    config = make_backend(keep_alive_s=2.0).config()
    worker = WarmWorker(config)
    assert worker.ready.wait(120) and worker.alive
    assert worker.exited.wait(30)  # no job for 2 s: it exits by itself
    assert worker.exit_reason == "idle" and worker.returncode == 0 and not worker.usable()
    assert "exited with code 0 (idle)" in (tmp_path / "worker.log").read_text()


def test_a_new_configuration_starts_a_new_child_and_the_old_one_stops(make_backend, job):
    first = make_backend().submit(job("cpu-default"))
    assert first.wait(300).status == "done"
    old = first.worker
    commercial = make_backend(commercial_only=True)  # another process setting: another worker
    assert "--commercial-only" in commercial.config().argv()
    second = commercial.submit(job("commercial"))
    assert second.worker is not old
    assert old.exited.wait(30) and old.exit_reason == "shutdown"  # retired: it had no job left
    assert second.wait(300).status == "done"
    assert [w for w in session.WORKERS if w.alive] == [second.worker]
    assert session.stop_workers() == 1 and second.worker.exited.wait(10) and not second.worker.alive


def test_switching_the_model_starts_a_fresh_child(make_backend, job):
    backend = make_backend()
    first = backend.submit(job("tiny", model="tiny-random"))
    assert first.wait(300).status == "done"
    second = backend.submit(job("preview", model="orbitmesh-preview"))  # another model: its own process
    assert second.worker is not first.worker and second.wait(300).status == "done"
    assert job_json(second.state())["worker_pid"] == second.worker.pid != first.worker.pid
    third = backend.submit(job("preview-again", model="orbitmesh-preview"))
    assert third.worker is second.worker and third.wait(300).status == "done"  # the same model: warm


def test_stopping_the_workers_cancels_the_running_job(make_backend, job):
    """What unregister and Blender's exit do (session.stop_workers): the child cancels its job and exits."""
    spec = job("stopped")
    handle = make_backend().submit(spec)
    wait_until(lambda: handle.state().stage or handle.finished, what="the job's first progress event")
    handle.request_cancel()  # ops_generate.unregister cancels the jobs first
    assert session.stop_workers() == 1
    assert handle.worker.exited.is_set() and handle.worker.exit_reason == "shutdown"
    state = handle.wait(10)
    assert state.status == "cancelled" and [r["status"] for r in folders(spec)] == ["cancelled"]
    assert list(Path(spec.work_dir).rglob("*.glb")) == []


def fake_orbitmesh(tmp_path: Path, main: str) -> str:
    """A site folder whose ``orbitmesh`` runs ``main`` as ``python -m orbitmesh`` (a broken or old install)."""
    site = tmp_path / "fake-site"
    (site / "orbitmesh").mkdir(parents=True)
    (site / "orbitmesh" / "__init__.py").write_text("__version__ = '0.0.1'\n")
    (site / "orbitmesh" / "__main__.py").write_text(main)
    return str(site)


@pytest.mark.parametrize("main, message, fix", [
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "the backend process was killed (exit code -9)",
     "smaller mesh resolution"),
    ("import sys\nsys.stderr.write(\"orbitmesh: error: argument COMMAND: invalid choice: 'worker'\\n\")\nsys.exit(2)\n",
     "older than the add-on", "Keep Loaded (minutes) to 0"),
    ("raise SystemExit('no torch here')\n", "stopped unexpectedly (exit code 1): no torch here", "generate.log"),
])
def test_a_child_that_dies_at_start_fails_the_job_with_a_fix(tmp_path, main, message, fix):
    backend = WorkerBackend(sys.executable, [fake_orbitmesh(tmp_path, main)], keep_alive_s=60)
    try:
        state = backend.submit(backends.JobSpec(name="x", work_dir=tmp_path / "work", prompt="a chair")).wait(30)
    finally:
        session.stop_workers()
    assert state.status == "failed" and message in state.error["message"], state.error
    assert fix in state.error["fix"]


def test_worker_config_and_keep_alive():
    config = WorkerConfig(python="py", settings_args=("--device", "cpu"), idle_exit_s=600, release_after_s=120)
    assert config.argv() == ["py", "-m", "orbitmesh", "worker", "--idle-exit", "600", "--release-after", "120",
                             "--device", "cpu"]
    assert config == WorkerConfig(python="py", settings_args=("--device", "cpu"), idle_exit_s=600.0,
                                  release_after_s=120.0)  # equal configurations share a worker
    with pytest.raises(ValueError):  # 0 minutes is the fresh-child backend, not a worker
        WorkerBackend(sys.executable, [], keep_alive_s=0)
