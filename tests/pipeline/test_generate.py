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
    assert list(rec["timings"]) == ["01-preprocess", "02-lrm", "03-grid_query", "04-carve", "05-mesh", "06-export"]
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
    assert list(dict.fromkeys(stages)) == ["preprocess", "lrm", "grid_query", "carve", "mesh", "export"]
    assert (tmp_path / "o.glb").is_file()
    bad = run_orbitmesh("generate", str(tmp_path / "missing.png"), *options, env=env, timeout=120)
    assert bad.returncode == 2
    err = json.loads(bad.stdout.splitlines()[-1])
    assert err["event"] == "error" and "missing.png" in err["message"] and err["fix"]


# ----- licences and --commercial-only ------------------------------------------------------------------------

def _install_vfusion3d_only(model_dir: Path) -> None:
    """A model folder holding (stand-in files of) VFusion3D only, as test_catalogue.py lays it out."""
    (model_dir / "vfusion3d").mkdir(parents=True)
    (model_dir / "vfusion3d" / "model.safetensors").write_bytes(b"x")


def test_commercial_only_setting_from_config_env_and_flag(tmp_path):
    from orbitmesh.cli import build_parser
    from orbitmesh.cli.common import settings_from_args
    from orbitmesh.settings import load_settings

    none = tmp_path / "none.toml"
    assert load_settings(none, env={}).commercial_only is False
    cfg = tmp_path / "c.toml"
    cfg.write_text('commercial_only = true\ndefault_model = "triposr"\n')
    s = load_settings(cfg, env={})
    assert (s.commercial_only, s.default_model) == (True, "triposr")
    assert load_settings(cfg, env={"ORBITMESH_COMMERCIAL_ONLY": "0"}).commercial_only is False  # env beats file
    assert load_settings(none, env={"ORBITMESH_COMMERCIAL_ONLY": "yes"}).commercial_only is True
    assert load_settings(none, env={"ORBITMESH_DEFAULT_MODEL": "vfusion3d"}).default_model == "vfusion3d"
    with pytest.raises(InputError, match="commercial_only must be true or false"):
        load_settings(none, env={"ORBITMESH_COMMERCIAL_ONLY": "maybe"})
    args = build_parser().parse_args(["generate", "x.png", "--commercial-only", "--config", str(none)])
    assert settings_from_args(args).commercial_only is True
    args = build_parser().parse_args(["generate", "x.png", "--config", str(cfg)])  # no flag: the file's value
    assert settings_from_args(args).commercial_only is True


def test_commercial_only_with_only_vfusion3d_is_an_error_naming_triposr(tmp_path, sample_photo, small_request,
                                                                         cpu_settings):
    from dataclasses import replace

    from orbitmesh.errors import LicenceError

    settings = replace(cpu_settings(tmp_path), commercial_only=True)
    _install_vfusion3d_only(settings.model_dir)
    for model in (None, "vfusion3d", "facebook/vfusion3d", str(settings.model_dir / "vfusion3d")):
        with pytest.raises(LicenceError) as err:
            generate(GenerateRequest(image_path=sample_photo, **{**small_request, "model": model}), settings=settings)
        assert "vfusion3d" in err.value.message and "--model triposr" in err.value.fix, model
    assert not settings.output_dir.exists()  # refused before any job folder (and before anything loaded)


def test_commercial_only_runs_with_tiny_random_and_job_json_records_the_licence(tmp_path, sample_photo,
                                                                                 small_request, cpu_settings):
    from dataclasses import replace

    settings = replace(cpu_settings(tmp_path), commercial_only=True)
    _install_vfusion3d_only(settings.model_dir)  # installed, but not what this job uses
    result = generate(GenerateRequest(image_path=sample_photo, **small_request), settings=settings)
    expected = {"lrm": {"name": "tiny-random", "licence": "Apache-2.0 (part of OrbitMesh)", "commercial": "yes",
                        "condition": None}}
    rec = JobFolder.open(result.job_dir).record
    assert rec["licences"] == expected and result.licences == expected
    assert result.to_dict()["licences"] == expected and rec["settings"]["settings"]["commercial_only"] == "True"
    assert not [w for w in result.warnings if "commercial" in w]
    assert result.glb_path.is_file()


def test_conditional_models_warn_and_unknown_ones_are_refused_at_resolution(tmp_path, sample_photo, cpu_settings):
    """Quality mode's SV3D and a prompt's SDXL-Turbo (Stability AI Community Licence) warn with the condition;
    nothing is loaded: the licences are decided from the request and the catalogue."""
    from dataclasses import replace

    from orbitmesh.errors import LicenceError
    from orbitmesh.models import catalogue
    from orbitmesh.models.registry import resolve_lrm_source
    from orbitmesh.pipeline.licences import job_licences

    loose = cpu_settings(tmp_path)
    strict = replace(loose, commercial_only=True)
    source = resolve_lrm_source("tiny-random", loose.model_dir)
    fast = job_licences(GenerateRequest(image_path=sample_photo, model="tiny-random"), strict, source)
    assert set(fast.licences) == {"lrm"} and fast.warnings == []
    quality = job_licences(GenerateRequest(image_path=sample_photo, mode="quality"), strict, source)
    assert quality.licences["video"] == catalogue.get("sv3d_p").licence_record()
    assert len(quality.warnings) == 1 and "sv3d_p" in quality.warnings[0] and "USD 1M" in quality.warnings[0]
    prompt = job_licences(GenerateRequest(prompt="a chair"), strict, source)
    assert prompt.licences["text_to_image"]["name"] == "stabilityai/sdxl-turbo"
    assert prompt.licences["text_to_image"]["commercial"] == "conditional"
    assert "stabilityai/sdxl-turbo" in prompt.warnings[0] and catalogue.SAI_CONDITION in prompt.warnings[0]
    flux = job_licences(GenerateRequest(prompt="a chair", text_to_image_model="black-forest-labs/FLUX.1-schnell"),
                        strict, source)
    assert flux.warnings == [] and flux.licences["text_to_image"]["licence"] == "Apache-2.0"
    unknown = GenerateRequest(prompt="a chair", text_to_image_model="someone/some-model")
    with pytest.raises(LicenceError, match="licence is unknown"):
        job_licences(unknown, strict, source)
    # Without commercial_only: recorded, never refused, no warnings.
    relaxed = job_licences(unknown, loose, source)
    assert relaxed.warnings == [] and relaxed.licences["text_to_image"]["commercial"] == "unknown"
    # generate() refuses the unknown text-to-image model before any job folder.
    with pytest.raises(LicenceError):
        generate(GenerateRequest(prompt="a chair", model="tiny-random", text_to_image_model="someone/some-model"),
                 settings=strict)
    assert not strict.output_dir.exists()


def test_cli_commercial_only_flag_refuses_vfusion3d(tmp_path, sample_photo, run_orbitmesh):
    _install_vfusion3d_only(tmp_path / "models")
    env = {**os.environ, "ORBITMESH_CONFIG": str(tmp_path / "none.toml")}
    env.pop("ORBITMESH_COMMERCIAL_ONLY", None)
    proc = run_orbitmesh("generate", sample_photo, "--model-dir", str(tmp_path / "models"), "--output-dir",
                         str(tmp_path / "jobs"), "--device", "cpu", "--progress", "jsonl", "--commercial-only",
                         env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = json.loads(proc.stdout.splitlines()[-1])
    assert err["event"] == "error" and "commercial use only" in err["message"] and "--model triposr" in err["fix"]
    assert not (tmp_path / "jobs").exists()
