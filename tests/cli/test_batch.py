"""`orbitmesh batch` (issue 15): folders, prompt lists and manifests in one batch, failed items that do not stop
it, batch.json, resume, Ctrl-C / SIGTERM, unique names, and a rerun of an item whose worker died.

Real jobs use the tiny-random model with small settings on the CPU. Prompt items point at a text-to-image
model folder that does not exist, so they fail at once with the model error (never touching the network).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbitmesh.batch import collect_items, run_batch
from orbitmesh.batch.inputs import check_defaults, unique_names
from orbitmesh.cli import main
from orbitmesh.errors import WorkerLost
from orbitmesh.executors.local import run_generate
from orbitmesh.jobs import MAX_ATTEMPTS


def _settings_args(tmp_path: Path, small_request: dict) -> list[str]:
    """Options of fast tiny-random CPU jobs (no user config); prompts fail at once (no text-to-image model)."""
    return ["--model", small_request["model"], "--mc-resolution", str(small_request["mc_resolution"]),
            "--target-faces", str(small_request["target_faces"]), "--texture-size", str(small_request["texture_size"]),
            "--device", "cpu", "--config", str(tmp_path / "none.toml"), "--model-dir", str(tmp_path / "models"),
            "--text-to-image-model", str(tmp_path / "no-text-to-image-model")]


def _batch(out: Path) -> dict:
    return json.loads((out / "batch.json").read_text(encoding="utf-8"))


def _items(out: Path) -> dict[str, dict]:
    return {item["name"]: item for item in _batch(out)["items"]}


def _job_records(jobs: Path) -> dict[str, dict]:
    """{job folder name: job.json} under ``jobs``."""
    return {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(jobs.glob("*/job.json"))}


def _photos(folder: Path, object_image, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        object_image(96, ((200, 60, 40), (40, 90, 200), (60, 160, 60))[n % 3]).save(folder / name)
    return folder


# ----- one batch of every kind of input, a bad image, --json, then a rerun -----------------------------------

def test_folder_prompts_and_manifest_in_one_batch_then_a_rerun_keeps_the_done_items(tmp_path, object_image,
                                                                                      small_request, capsys):
    photos = _photos(tmp_path / "photos", object_image, ["chair.png", "lamp.png"])
    (photos / "broken.png").write_bytes(b"this is not an image")
    (photos / "notes.md").write_text("not an image extension: left out")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# one prompt a line\n\na wooden chair\n", encoding="utf-8")
    manifest = tmp_path / "shots" / "shots.csv"
    manifest.parent.mkdir()
    manifest.write_text("image,seed,texture_size\n../photos/chair.png,7,64\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["batch", str(photos), str(prompts), str(manifest), "-o", str(out), *_settings_args(tmp_path, small_request),
            "--json"]

    rc = main(argv)
    stdout = capsys.readouterr().out
    assert rc == 1, stdout  # some failed
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"], summary["cancelled"], summary["skipped"]) == (3, 2, 0, 0)

    batch = _batch(out)
    assert batch["version"] == 1 and batch["finished"] >= batch["started"]
    assert batch["summary"] == {k: summary[k] for k in ("total", "done", "failed", "cancelled", "skipped", "seconds")}
    # input order: the folder sorted by name, the prompt list, the manifest; the second chair gets a unique name
    assert [i["name"] for i in batch["items"]] == ["broken", "chair", "lamp", "a-wooden-chair", "chair-2"]
    items = _items(out)
    assert {n: i["status"] for n, i in items.items()} == {"broken": "failed", "chair": "done", "lamp": "done",
                                                          "a-wooden-chair": "failed", "chair-2": "done"}
    assert items["broken"]["error"]["message"].endswith("is not an image Pillow can read")
    assert items["broken"]["error"]["fix"] and items["broken"]["glb"] is None
    assert "text-to-image model" in items["a-wooden-chair"]["error"]["message"]
    assert items["a-wooden-chair"]["input"] == {"prompt": "a wooden chair"}
    # the manifest row: its image relative to the manifest, its settings over the command line's
    assert items["chair-2"]["input"] == {"image": str(photos / "chair.png")}
    assert (items["chair-2"]["settings"]["seed"], items["chair-2"]["settings"]["texture_size"]) == (7, 64)
    assert items["chair-2"]["settings"]["mc_resolution"] == small_request["mc_resolution"]
    assert items["chair"]["settings"]["seed"] == 42 and items["chair"]["key"] != items["chair-2"]["key"]
    for name in ("chair", "lamp", "chair-2"):
        item = items[name]
        assert item["glb"] == f"{name}.glb" and (out / item["glb"]).read_bytes()[:4] == b"glTF"
        assert item["attempts"] == 1 and item["worker"].startswith("local:") and item["seconds"] > 0
        assert Path(item["job"]).parent == out / "jobs" and item["error"] is None
    assert sorted(p.name for p in out.glob("*.glb")) == ["chair-2.glb", "chair.glb", "lamp.glb"]
    jobs_before = _job_records(out / "jobs")
    assert sorted(r["status"] for r in jobs_before.values()) == ["done"] * 3 + ["failed"] * 2

    # The same command again: the done items are kept (not run: no new job folder, same seconds), the failed
    # ones run again.
    rc = main(argv)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 1 and (summary["done"], summary["failed"], summary["skipped"]) == (3, 2, 3)
    again = _items(out)
    for name in ("chair", "lamp", "chair-2"):
        assert again[name] == items[name]  # the record is kept as it was
    jobs_after = _job_records(out / "jobs")
    new = {k: v for k, v in jobs_after.items() if k not in jobs_before}
    assert sorted(r["status"] for r in new.values()) == ["failed", "failed"]
    assert again["broken"]["job"] != items["broken"]["job"] and Path(again["broken"]["job"]).name in new


# ----- bad manifests are refused before anything runs -----------------------------------------------------

@pytest.mark.parametrize(("name", "text", "expected"), [
    ("shots.csv", "image,colour\nchair.png,red\n", ": unknown column 'colour'"),
    ("shots.jsonl", '{"image": "chair.png"}\n{"prompt": "a lamp", "colour": "red"}\n', ":2: unknown key 'colour'"),
    ("shots.csv", "image,seed\nchair.png,7\nchair.png,seven\n", ":3: seed must be a whole number"),
    ("shots.csv", "image,prompt\nchair.png,a chair\n", ":2: give exactly one of image or prompt"),
])
def test_a_bad_manifest_is_an_input_error_naming_it_and_nothing_runs(tmp_path, capsys, name, text, expected):
    manifest = tmp_path / name
    manifest.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["batch", str(manifest), "-o", str(out), "--model", "tiny-random"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"error: {manifest}{expected}" in err and "fix: " in err
    assert not out.exists()


# ----- names ----------------------------------------------------------------------------------------------

def test_names_are_unique_and_deterministic_in_input_order(tmp_path, object_image):
    a = _photos(tmp_path / "a", object_image, ["chair.png"])
    b = _photos(tmp_path / "b", object_image, ["Chair.jpg", "chair-2.png"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Chair\nA lamp, please!\n", encoding="utf-8")
    inputs = [str(a), str(b), str(prompts)]
    items = collect_items(inputs, check_defaults({}))
    names = unique_names(items)
    # compared without case (Chair / chair would be one file on macOS and Windows)
    assert names == ["chair", "Chair-2", "chair-2-2", "chair-3", "a-lamp-please"]
    assert unique_names(collect_items(inputs, check_defaults({}))) == names


# ----- a worker that dies ---------------------------------------------------------------------------------

class DyingWorkerStandIn:
    """A stand-in for a pool whose worker process dies under a job: ``run`` raises WorkerLost, as the Ray pool does
    when the actor running the job dies, the first ``deaths[name]`` times an item runs; otherwise it runs the real
    job in this process."""

    name = "stand-in"
    workers = 1

    def __init__(self, deaths: dict[str, int]) -> None:
        self.deaths = dict(deaths)
        self.runs: list[str] = []

    def run(self, request, settings, tracker):
        name = Path(request.image_path).stem
        self.runs.append(name)
        if self.deaths.get(name, 0) > 0:
            self.deaths[name] -= 1
            raise WorkerLost("worker stand-in:1 died (stand-in for a killed process)", fix="check the worker")
        return run_generate(request, settings, tracker)

    def close(self) -> None:
        pass


def test_an_item_whose_worker_died_runs_again_then_fails_clearly(tmp_path, object_image, small_request,
                                                                 cpu_settings):
    photos = _photos(tmp_path / "photos", object_image, ["chair.png", "lamp.png"])
    executor = DyingWorkerStandIn({"chair": 1, "lamp": 99})  # chair's first worker dies; lamp's always do
    events: list[dict] = []
    summary = run_batch([photos], tmp_path / "out", small_request, settings=cpu_settings(tmp_path),
                        on_event=events.append, executor=executor)
    assert MAX_ATTEMPTS == 2  # the default: --retries 1
    assert executor.runs == ["chair", "chair", "lamp", "lamp"]
    assert (summary.done, summary.failed, summary.ok) == (1, 1, False)
    items = _items(tmp_path / "out")
    assert items["chair"]["status"] == "done" and items["chair"]["attempts"] == 2
    assert (tmp_path / "out" / "chair.glb").is_file()
    lamp = items["lamp"]
    assert lamp["status"] == "failed" and lamp["attempts"] == 2 and lamp["glb"] is None
    assert "the worker running this item died" in lamp["error"]["message"]
    assert "gave up after 2 runs" in lamp["error"]["message"] and "run the same command again" in lamp["error"]["fix"]
    assert [(e["event"], e["name"]) for e in events if e["event"] == "retry"] == [("retry", "chair"), ("retry", "lamp")]

    once = DyingWorkerStandIn({"lamp": 99})
    summary = run_batch([photos / "lamp.png"], tmp_path / "out0", small_request, settings=cpu_settings(tmp_path),
                        retries=0, executor=once)
    assert once.runs == ["lamp"] and summary.failed == 1
    assert "gave up after 1 run" in _items(tmp_path / "out0")["lamp"]["error"]["message"]


# ----- Ctrl-C and SIGTERM ------------------------------------------------------------------------------------

# The real CLI in a child process whose mesh stage, for the item named b-slow only, keeps reporting progress
# until the test signals it (a long stage: a cancel stops it at its next progress step). SIGINT is reset to
# Python's handler as in a terminal (a child of a shell without job control inherits it ignored).
WAITING_CLI = """
import signal, sys, time
from orbitmesh.pipeline import output

signal.signal(signal.SIGINT, signal.default_int_handler)
real_run = output.MeshStage.run

def slow_for_b(self, ctx):
    if ctx.job.record["name"] != "b-slow":
        return real_run(self, ctx)
    while True:
        ctx.progress(self.name, 0, 1, "waiting for the test's signal")
        time.sleep(0.05)

output.MeshStage.run = slow_for_b
from orbitmesh.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _start_until_b_runs(tmp_path: Path, object_image, small_request: dict, code: str, *options: str):
    """The batch of a.png, b-slow.png, c.png in a child process running ``code``, once a is done and b-slow is in
    its (waiting) mesh stage."""
    photos = _photos(tmp_path / "photos", object_image, ["a.png", "b-slow.png", "c.png"])
    out = tmp_path / "out"
    argv = [sys.executable, "-c", code, "batch", str(photos), "-o", str(out),
            *_settings_args(tmp_path, small_request), *options]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"b-slow never ran (rc {proc.poll()}): {proc.communicate()[1][-3000:]}")
        try:
            states = {n: i["status"] for n, i in _items(out).items()}
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet (never half-written: atomic)
            states = {}
        b_jobs = [json.loads(p.read_text(encoding="utf-8")) for p in out.glob("jobs/*-b-slow-*/job.json")]
        in_mesh = any(str(job.get("stage") or "").endswith("-mesh") for job in b_jobs)
        if states.get("a") == "done" and states.get("b-slow") == "running" and in_mesh:
            return proc, out
        time.sleep(0.1)


def _stopped_consistently(out: Path) -> None:
    """batch.json after a stop: a done with its GLB, b-slow and c cancelled, nothing queued or running."""
    batch = _batch(out)
    assert {n: i["status"] for n, i in _items(out).items()} == {"a": "done", "b-slow": "cancelled", "c": "cancelled"}
    assert batch["finished"] and batch["summary"]["done"] == 1 and batch["summary"]["cancelled"] == 2
    assert (out / "a.glb").read_bytes()[:4] == b"glTF" and sorted(p.name for p in out.glob("*.glb")) == ["a.glb"]
    assert _items(out)["c"]["error"]["fix"].startswith("run the same command again")


@pytest.mark.parametrize(("signum", "progress", "code"), [(signal.SIGINT, "bar", 130),
                                                         (signal.SIGTERM, "jsonl", 143)])
def test_a_signal_stops_the_batch_and_leaves_batch_json_consistent(tmp_path, object_image, small_request, signum,
                                                                   progress, code):
    proc, out = _start_until_b_runs(tmp_path, object_image, small_request, WAITING_CLI, "--progress", progress)
    try:
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    _stopped_consistently(out)
    # the running job stopped at its next progress step: its job folder ended cancelled
    b_job = json.loads((Path(_items(out)["b-slow"]["job"]) / "job.json").read_text(encoding="utf-8"))
    assert b_job["status"] == "cancelled"
    if progress == "jsonl":
        events = [json.loads(line) for line in stdout.splitlines()]
        assert [(e["event"], e.get("name")) for e in events if e["event"] in ("started", "done")][:2] == [
            ("started", "a"), ("done", "a")]
        assert all(0 <= e["progress"] <= 1 for e in events if "progress" in e)
        assert {"event": "stopping", "status": "stopping", "running": ["b-slow"]} in events
        assert events[-1]["event"] == "summary" and events[-1]["stopped"] == "terminated (SIGTERM)"
    else:
        assert "interrupted (Ctrl-C): batch stopped" in stderr
        table = {line.split()[0]: line.split()[1] for line in stdout.splitlines()[1:-1]}
        assert table == {"a": "done", "b-slow": "cancelled", "c": "cancelled"}, stdout


def test_a_second_ctrl_c_stops_without_waiting_for_a_stuck_item(tmp_path, object_image, small_request):
    """An item in a long step that reports no progress (a native call) cannot stop at once: the first Ctrl-C
    waits for it, the second ends the batch anyway, batch.json still consistent."""
    stuck = WAITING_CLI.replace("""    while True:
        ctx.progress(self.name, 0, 1, "waiting for the test's signal")
        time.sleep(0.05)""", """    ctx.progress(self.name, 0, 1, "stuck in a long step")
    time.sleep(600)""")
    assert "stuck in a long step" in stuck
    proc, out = _start_until_b_runs(tmp_path, object_image, small_request, stuck, "--json")
    try:
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):  # still waiting for b-slow's next progress step
            proc.wait(timeout=1.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Ctrl-C again to stop without waiting" in stderr
    _stopped_consistently(out)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["done"], summary["cancelled"], summary["stopped"]) == (1, 2, "interrupted (Ctrl-C)")
