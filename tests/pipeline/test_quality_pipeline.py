"""Quality mode stages end to end on the tiny random LRM and synthetic orbit frames (no SV3D weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from orbitmesh.errors import ModelError
from orbitmesh.jobs import JobFolder
from orbitmesh.pipeline.orbit import OrbitConfig, OrbitResult, orbit_cameras
from orbitmesh.pipeline.orchestrator import Orchestrator
from orbitmesh.pipeline.quality import AlignStage, QualityConfig, QualityMeshStage, RefineStage
from orbitmesh.pipeline.reconstruct import GridQueryStage
from orbitmesh.quality.align import AlignConfig
from orbitmesh.quality.cameras import OrbitAlignment
from orbitmesh.quality.refine import RefineConfig


def test_quality_stages_write_the_job_folder(tmp_path):
    from orbitmesh.models.registry import tiny_random_lrm

    model = tiny_random_lrm()
    with torch.no_grad():
        planes = model(torch.full((1, 3, model.config.input_size, model.config.input_size), 0.5))
    cams = orbit_cameras(OrbitConfig(size=64))
    truth = OrbitAlignment(azimuth_offset_deg=5.0)
    rc = torch.stack([truth.camera(c["azimuth_deg"], c["elevation_deg"]).render_camera() for c in cams])
    with torch.no_grad():
        rgb = model.render(planes, rc[None], 48, deterministic=True)["images_rgb"][0]
    frames = [Image.fromarray((f.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)) for f in rgb]
    frames[7] = Image.new("RGB", (48, 48), "white")  # a frame where the video model lost the object
    config = QualityConfig(align=AlignConfig(size=48, max_evaluations=24), align_grid=48, render_size=32,
                           refine=RefineConfig(steps=3, rays_per_step=256, samples=8, image_size=32))
    job = JobFolder.create(tmp_path, "quality")
    steps = []
    state, _ = Orchestrator([AlignStage(config), RefineStage(config), GridQueryStage(48),
                             QualityMeshStage(1000, 128, config)]).run(
        job, lambda stage, i, n, m="": steps.append(stage),
        state={"orbit": OrbitResult(frames, cams, frames[-1]), "lrm": model, "planes": planes})
    names = set(p.name for p in job.path.iterdir())
    assert {"aligned_cameras.json", "render_before.png", "render_after.png", "texture.png", "model.glb",
            "mask_00.png", "mask_20.png"} <= names
    rec = json.loads((job.path / "job.json").read_text())
    assert rec["status"] == "done" and rec["refine"]["steps"] == 3 and rec["align"]["skipped"] == ["orbit_07"]
    cams_json = json.loads((job.path / "aligned_cameras.json").read_text())
    assert len(cams_json["frames"]) == 21 and len(cams_json["frames"][0]["c2w"]) == 3
    assert cams_json["skipped"] == ["orbit_07"] and "orbit_07" not in cams_json["frame_iou"]
    assert any("orbit_07" in w for w in state.warnings)
    assert "orbit_07" in state.mesh_stats["views_skipped"]
    assert (job.path / "model.glb").read_bytes()[:4] == b"glTF"
    assert {"align", "refine", "project", "mesh"} <= set(steps)


def test_quality_mode_without_sv3d_is_refused_before_a_job(tmp_path, object_image, cpu_settings):
    from orbitmesh.pipeline.generate import generate
    from orbitmesh.pipeline.request import GenerateRequest

    image = tmp_path / "in.png"
    object_image(32).save(image)
    settings = cpu_settings(tmp_path)
    with pytest.raises(ModelError, match="sv3d_p") as err:
        generate(GenerateRequest(image_path=str(image), mode="quality", model="tiny-random"), settings=settings)
    assert "quality mode" in err.value.message and "fast" in err.value.fix
    assert not settings.output_dir.exists()  # refused before any job folder
