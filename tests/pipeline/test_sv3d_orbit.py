"""Tiny end-to-end SV3D orbit (random tiny UNet/VAE/CLIP, 2 steps, 5 frames, 64x64)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from orbitmesh.errors import InputError, JobCancelled
from orbitmesh.jobs import JobFolder
from orbitmesh.models.video.pipeline import SV3DPipeline
from orbitmesh.models.video.tiny import tiny_modules
from orbitmesh.pipeline.orbit import OrbitConfig, OrbitStage, generate_orbit, orbit_azimuths_deg
from orbitmesh.pipeline.orchestrator import Orchestrator
from orbitmesh.progress import ProgressTracker

TINY = dict(steps=2, num_frames=5, size=64)


@pytest.fixture(scope="module")
def pipe():
    unet, vae, clip = tiny_modules(seed=1)
    return SV3DPipeline(unet, vae, clip)


@pytest.fixture(scope="module")
def object_png(tmp_path_factory, object_image):
    path = tmp_path_factory.mktemp("orbit") / "mug.png"
    object_image(120).save(path)
    return path


def test_stage_writes_frames_and_cameras(pipe, object_png, tmp_path):
    job = JobFolder.create(tmp_path, "mug")
    state, _ = Orchestrator([OrbitStage(OrbitConfig(**TINY), pipeline=pipe)]).run(
        job, state={"image_path": str(object_png)})
    names = [f"orbit_{i:02d}.png" for i in range(5)]
    for name in names + ["orbit_input.png"]:
        with Image.open(job.path / name) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    cams = json.loads((job.path / "orbit_cameras.json").read_text())["frames"]
    assert [c["file"] for c in cams] == names
    assert [round(c["azimuth_deg"]) for c in cams] == [72, 144, 216, 288, 0]  # last frame = input view
    assert all(c["elevation_deg"] == 10.0 and c["radius"] > 0 and c["fov_deg"] > 0 for c in cams)
    assert cams[0]["polar_rad"] == pytest.approx(np.deg2rad(80.0))
    record = JobFolder.open(job.path).record
    assert record["status"] == "done" and record["orbit"]["frames"] == names
    # the reference replaces the azimuth-0 frame by the input itself
    with Image.open(job.path / "orbit_04.png") as last, Image.open(job.path / "orbit_input.png") as inp:
        assert np.array_equal(np.asarray(last), np.asarray(inp))
    assert len(state.orbit.frames) == 5


def test_same_seed_same_frames_other_seed_differs(pipe, object_image):
    def frames(seed):
        out = generate_orbit(pipe, object_image(64), OrbitConfig(**TINY, seed=seed, replace_last_frame=False))
        return np.stack([np.asarray(f) for f in out.frames])

    a, b, c = frames(7), frames(7), frames(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std() > 0  # a real decode, not a constant image


def test_low_memory_mode_gives_the_same_frames(pipe, object_image):
    unet, vae, clip = tiny_modules(seed=1)
    low = SV3DPipeline(unet, vae, clip, offload=True).to("cpu")
    cfg = OrbitConfig(**TINY, seed=5, replace_last_frame=False)
    a = np.stack([np.asarray(f, dtype=np.int16) for f in generate_orbit(pipe, object_image(64), cfg).frames])
    b = np.stack([np.asarray(f, dtype=np.int16) for f in generate_orbit(low, object_image(64), cfg).frames])
    assert np.abs(a - b).max() <= 1


def test_progress_per_step_and_cancel_after_step_1(pipe, object_png, tmp_path):
    calls = []
    hook = pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    events = []

    def listener(event):
        events.append(event.message)
        if event.message.startswith("sampling step 1/"):
            tracker.cancel()

    tracker = ProgressTracker(listener=listener)
    job = JobFolder.create(tmp_path, "mug")
    try:
        with pytest.raises(JobCancelled):
            Orchestrator([OrbitStage(OrbitConfig(**{**TINY, "steps": 4}), pipeline=pipe)]).run(
                job, tracker, state={"image_path": str(object_png)})
    finally:
        hook.remove()
    assert len(calls) == 2  # one step (uncond, then cond: one after the other on the CPU), then stopped
    assert "sampling step 2/4" not in events
    assert JobFolder.open(job.path).status == "cancelled"
    assert not list(job.path.glob("orbit_*.png"))


def test_bad_settings_are_input_errors(pipe, object_image):
    with pytest.raises(InputError, match="steps"):
        OrbitConfig(steps=0).validate()
    with pytest.raises(InputError, match="elevation"):
        OrbitConfig(elevation=float("nan")).validate()
    with pytest.raises(InputError, match="multiple of 64"):
        OrbitConfig(size=100).validate()
    with pytest.raises(InputError, match="64x64"):
        generate_orbit(pipe, object_image(32), OrbitConfig(**TINY))


def test_sv3d_u_runs_without_camera_conditioning(object_image):
    from orbitmesh.models.video.tiny import TINY_SGM_CONFIG

    unet, vae, clip = tiny_modules({**TINY_SGM_CONFIG, "adm_in_channels": 256}, seed=4)
    pipe_u = SV3DPipeline(unet, vae, clip, variant="sv3d_u")
    assert not pipe_u.has_cameras
    out = generate_orbit(pipe_u, object_image(64), OrbitConfig(steps=1, num_frames=3, size=64))
    assert len(out.frames) == 3 and len(out.cameras) == 3


def test_azimuths_match_reference_convention():
    az = orbit_azimuths_deg(21)
    assert az[-1] == 0.0 and az[0] == pytest.approx(360 / 21) and np.all(np.diff(az[:-1]) > 0)


def test_orbit_cli_with_converted_folder(object_png, tmp_path, capsys):
    import json as _json

    from safetensors.torch import save_file

    from orbitmesh.cli import main
    from orbitmesh.models.video.convert import convert_checkpoint
    from orbitmesh.models.video.tiny import TINY_SGM_CONFIG, tiny_sgm_checkpoint

    ckpt, _ = tiny_sgm_checkpoint(seed=2, temporal_decoder=False)
    src = tmp_path / "tiny.safetensors"
    save_file(ckpt, str(src), metadata={"unet_config": _json.dumps(TINY_SGM_CONFIG)})
    convert_checkpoint(src, tmp_path / "model")
    code = main(["orbit", str(object_png), "-o", str(tmp_path / "jobs"), "--model", str(tmp_path / "model"),
                 "--steps", "2", "--num-frames", "5", "--size", "64", "--seed", "3", "--device", "cpu",
                 "--dtype", "float32", "--quiet"])
    assert code == 0
    (job_dir,) = (tmp_path / "jobs").iterdir()
    assert len(list(job_dir.glob("orbit_[0-9][0-9].png"))) == 5 and (job_dir / "orbit_cameras.json").is_file()
    assert "wrote 5 frames" in capsys.readouterr().out


def test_model_names_resolve_in_the_model_folder(tmp_path):
    from orbitmesh.errors import ModelError
    from orbitmesh.models.video.pipeline import HUB_ID, resolve_source

    (tmp_path / "sv3d_u").mkdir()
    assert resolve_source("sv3d_u", tmp_path) == (tmp_path / "sv3d_u", "sv3d_u")
    assert resolve_source("sv3d_p", tmp_path) == (HUB_ID, "sv3d_p")  # not local: the gated hub repo
    with pytest.raises(ModelError, match="unknown SV3D model"):
        resolve_source("sv4d", tmp_path)
