"""Fast-mode generate(): tiny-random end to end, job folder, cancel, errors, CLI protocol, orientation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from orbitmesh.errors import InputError, JobCancelled, ModelError
from orbitmesh.jobs import JobFolder
from orbitmesh.pipeline.generate import generate
from orbitmesh.pipeline.request import GenerateRequest
from orbitmesh.progress import ProgressTracker


def test_generate_tiny_random_writes_valid_glb_and_job(tmp_path, sample_photo, small_request, cpu_settings,
                                                     validate_glb):
    events = []
    tracker = ProgressTracker(listener=events.append)
    out = tmp_path / "copy" / "tank.glb"
    result = generate(GenerateRequest(image_path=sample_photo, output=str(out), seed=7, **small_request),
                      settings=cpu_settings(tmp_path), progress=tracker)
    job = JobFolder.open(result.job_dir)
    rec = job.record
    assert rec["status"] == "done" and rec["model"] == "tiny-random" and rec["seed"] == 7
    assert list(rec["timings"]) == ["01-preprocess", "02-lrm", "03-grid_query", "04-mesh", "05-export"]
    assert {"input.jpg", "preprocessed.png", "model.glb"} <= set(rec["artefacts"])
    resolution = small_request["mc_resolution"]
    assert rec["settings"]["request"]["mc_resolution"] == resolution and rec["lrm"]["config"]["triplane_dim"] == 8
    assert result.glb_path == job.path / "model.glb" and out.read_bytes() == result.glb_path.read_bytes()
    report = validate_glb(result.glb_path)
    assert report["issues"]["numErrors"] == 0
    mesh = result.stats["mesh"]
    assert 0 < mesh["faces"] <= small_request["target_faces"] * 1.1
    assert result.stats["grid"]["resolution"] == resolution
    # Per-stage progress, the grid query once per chunk.
    stages = [e.stage for e in events]
    assert stages.index("preprocess") < stages.index("lrm") < stages.index("grid_query") < stages.index("mesh")
    assert sum(1 for e in events if e.stage == "grid_query" and e.step > 0) >= 1
    assert json.loads(json.dumps(result.to_dict()))["model"] == "tiny-random"


def test_tiny_random_is_deterministic():
    from orbitmesh.models.registry import tiny_random_lrm

    a, b = tiny_random_lrm().state_dict(), tiny_random_lrm().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cancel_during_grid_query_leaves_cancelled_job_without_glb(tmp_path, sample_photo, small_request,
                                                                   cpu_settings):
    tracker = ProgressTracker()

    def listener(event):
        if event.stage == "grid_query" and event.step >= 1:
            tracker.cancel()

    tracker.listener = listener
    out = tmp_path / "never.glb"
    with pytest.raises(JobCancelled):
        request = GenerateRequest(image_path=sample_photo, output=str(out), **{**small_request, "mc_resolution": 128})
        generate(request, settings=cpu_settings(tmp_path), progress=tracker)
    (job_dir,) = list((tmp_path / "jobs").iterdir())
    rec = JobFolder.open(job_dir).record
    assert rec["status"] == "cancelled" and rec["error"]["stage"] == "grid_query"
    assert not (job_dir / "model.glb").exists() and not out.exists()
    assert not [p for p in job_dir.iterdir() if p.name.endswith(".glb")]


def test_no_model_is_a_clear_error_before_any_job(tmp_path, sample_photo, small_request, cpu_settings, monkeypatch):
    from orbitmesh.models import registry

    monkeypatch.setattr(registry, "preview_model_dir", lambda: tmp_path / "no-preview")  # not even the bundled one
    settings = cpu_settings(tmp_path)
    with pytest.raises(ModelError) as err:
        generate(GenerateRequest(image_path=sample_photo), settings=settings)
    assert "tiny-random" in err.value.fix and "vfusion3d" in err.value.fix
    assert not settings.output_dir.exists()
    with pytest.raises(InputError, match=r"\.glb"):
        generate(GenerateRequest(image_path=sample_photo, output=str(tmp_path / "x.obj"), **small_request),
                 settings=settings)
    with pytest.raises(ModelError, match="not available yet"):
        generate(GenerateRequest(image_path=sample_photo, mode="quality", **small_request), settings=settings)


def test_model_resolution(tmp_path):
    from orbitmesh.models.catalogue import get
    from orbitmesh.models.registry import resolve_lrm_source

    assert "CC-BY-NC 4.0" in get("vfusion3d").licence_notice()
    src = resolve_lrm_source("vfusion3d", tmp_path)
    assert (src.kind, src.location) == ("hub", "facebook/vfusion3d")
    assert resolve_lrm_source("facebook/vfusion3d", tmp_path).name == "vfusion3d"
    (tmp_path / "vfusion3d").mkdir()
    (tmp_path / "vfusion3d" / "model.safetensors").write_bytes(b"x")
    assert resolve_lrm_source(None, tmp_path).kind == "path"  # a real model in the model folder wins
    with pytest.raises(ModelError, match="video model"):
        resolve_lrm_source("sv3d_u", tmp_path)
    with pytest.raises(ModelError, match="model not found"):
        resolve_lrm_source("no-such-model.pth", tmp_path)


def test_orientation_output_frame():
    """Output frame = LRM frame turned about +z so the input view (+x in the LRM) faces -y (Blender front)."""
    from orbitmesh.pipeline.reconstruct import lrm_points_from_output

    out = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    lrm = lrm_points_from_output(out)
    np.testing.assert_array_equal(lrm[0], [1, 0, 0])  # front (-y out) <- camera side (+x)
    np.testing.assert_array_equal(lrm[1], [0, 1, 0])  # screen right (+x out) <- image right (+y)
    np.testing.assert_array_equal(lrm[2], [0, 0, 1])  # up stays up
    t = lrm_points_from_output(torch.from_numpy(out))
    assert torch.equal(t, torch.from_numpy(lrm))


def test_density_grid_matches_point_queries(random_lrm, point_query_density):
    """The streamed grid (any chunking) equals direct point queries at the rotated grid points."""
    from orbitmesh.pipeline.reconstruct import density_grid

    model, planes = random_lrm
    r = 9
    a = density_grid(model, planes, r, chunk_size=81)
    b = density_grid(model, planes, r, chunk_size=10_000)
    ref = point_query_density(model, planes, r)
    np.testing.assert_allclose(a, ref, atol=1e-6)
    np.testing.assert_allclose(b, ref, atol=1e-6)


def test_cli_jsonl_protocol(tmp_path, sample_photo, run_orbitmesh):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ORBITMESH_CONFIG": str(tmp_path / "none.toml")}
    options = ["-o", str(tmp_path / "o.glb"), "--model", "tiny-random", "--mc-resolution", "32", "--target-faces",
               "500", "--texture-size", "64", "--output-dir", str(tmp_path / "jobs"), "--device", "cpu",
               "--progress", "jsonl"]
    proc = run_orbitmesh("generate", sample_photo, *options, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1]["event"] == "done" and Path(lines[-1]["result"]["glb_path"]).is_file()
    assert lines[0]["event"] == "progress"
    assert {"stage", "step", "total", "message", "eta_s", "progress"} <= set(lines[0])
    overall = [e["progress"] for e in lines if e["event"] == "progress"]
    assert overall == sorted(overall) and overall[0] < 0.05 and 0.9 < overall[-1] < 1.0  # weighted, monotone
    stages = [e["stage"] for e in lines if e["event"] == "progress"]
    assert list(dict.fromkeys(stages)) == ["preprocess", "lrm", "grid_query", "mesh", "export"]
    assert (tmp_path / "o.glb").is_file()
    bad = run_orbitmesh("generate", str(tmp_path / "missing.png"), *options, env=env, timeout=120)
    assert bad.returncode == 2
    err = json.loads(bad.stdout.splitlines()[-1])
    assert err["event"] == "error" and "missing.png" in err["message"] and err["fix"]
