"""Settings stack, job folders, atomic writes, orchestrator status handling, CLI basics."""

from __future__ import annotations

import json

import pytest

from orbitmesh import __version__, atomic
from orbitmesh.errors import InputError, JobCancelled, OrbitMeshError
from orbitmesh.jobs import JobFolder, slugify
from orbitmesh.pipeline import Orchestrator
from orbitmesh.progress import ProgressTracker
from orbitmesh.settings import load_settings


def test_settings_precedence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('device = "cpu"\ndtype = "float16"\noutput_dir = "/from/file"\n')
    s = load_settings(cfg, env={"ORBITMESH_DTYPE": "bfloat16", "ORBITMESH_OUTPUT_DIR": "/from/env"},
                      output_dir="/from/cli")
    assert s.device == "cpu"  # file beats default
    assert s.dtype == "bfloat16"  # env beats file
    assert str(s.output_dir) == "/from/cli"  # CLI beats env
    assert s.model_dir.name == "models"  # default


def test_settings_bad_values(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('devise = "cpu"\n')
    with pytest.raises(InputError, match="unknown keys"):
        load_settings(cfg, env={})
    with pytest.raises(InputError, match="unknown device"):
        load_settings(tmp_path / "none.toml", env={"ORBITMESH_DEVICE": "tpu"})


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    atomic.write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole" and len(list(tmp_path.iterdir())) == 1


def test_job_folder_layout(tmp_path):
    job = JobFolder.create(tmp_path, "My Chair (v2).png", settings={"seed": 3})
    assert job.path.parent == tmp_path and "-my-chair-v2-png-" in job.path.name
    job.write_json("mesh.json", {"faces": 1})
    rec = json.loads((job.path / "job.json").read_text())
    assert rec["status"] == "queued" and rec["settings"] == {"seed": 3}
    assert rec["artefacts"] == ["mesh.json"] and rec["versions"]["orbitmesh"] == __version__
    for bad in ("../x", "a/b", ".hidden", "job.json", ""):
        with pytest.raises(ValueError):
            job.artefact(bad)
    assert slugify("   ") == "job"


class _Stage:
    def __init__(self, name, fail=None):
        self.name, self.fail = name, fail

    def run(self, ctx):
        for i in range(3):
            ctx.progress(self.name, i + 1, 3, "work")
        if self.fail:
            raise self.fail
        ctx.state.warn(self.name)


def test_orchestrator_timings_and_status(tmp_path):
    job = JobFolder.create(tmp_path, "ok")
    state, timings = Orchestrator([_Stage("a"), _Stage("b")]).run(job)
    assert state.warnings == ["a", "b"] and [t.name for t in timings] == ["a", "b"]
    rec = JobFolder.open(job.path).record
    assert rec["status"] == "done" and set(rec["timings"]) == {"01-a", "02-b"}


def test_orchestrator_cancel_and_failure(tmp_path):
    tracker = ProgressTracker()
    tracker.cancel()
    job = JobFolder.create(tmp_path, "cancel")
    with pytest.raises(JobCancelled):
        Orchestrator([_Stage("a")]).run(job, tracker)
    assert JobFolder.open(job.path).status == "cancelled"

    job = JobFolder.create(tmp_path, "fail")
    with pytest.raises(OrbitMeshError):
        Orchestrator([_Stage("a", InputError("bad", fix="good"))]).run(job)
    rec = JobFolder.open(job.path).record
    assert rec["status"] == "failed" and rec["error"]["fix"] == "good" and rec["error"]["stage"] == "a"


def test_progress_eta():
    seen = []
    tracker = ProgressTracker(listener=seen.append)
    for i in range(4):
        tracker("s", i, 10)
    assert tracker.latest.step == 3 and tracker.latest.eta_s is not None and len(seen) == 4


def test_cli_version_and_doctor(run_orbitmesh):
    out = run_orbitmesh("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    out = run_orbitmesh("doctor")
    assert out.returncode == 0, out.stderr
    assert "device:" in out.stdout and "torch" in out.stdout


def test_doctor_says_when_pymeshlab_is_installed_but_cannot_load(run_python, tmp_path):
    """pymeshlab's Linux wheel needs glibc 2.35: on an older system it is installed but does not import (a
    stand-in package that fails like it, first on the path)."""
    fake = tmp_path / "site" / "pymeshlab"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"/lib/libc.so.6: version `GLIBC_2.35' not found\")\n")
    code = (f"import json, sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); "
            "from orbitmesh.cli.doctor import collect; from orbitmesh.settings import Settings; "
            f"info = collect(Settings(model_dir={str(tmp_path)!r})); "
            "print(json.dumps([m for m in info['missing'] if m['part'].startswith('pymeshlab')]))")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    missing = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    assert len(missing) == 1 and "cannot load" in missing[0]["part"] and "GLIBC_2.35" in missing[0]["part"]
    assert "glibc 2.35" in missing[0]["fix"]
