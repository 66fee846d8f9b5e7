"""The shipped preview model: packaged files, default resolution, and real reconstructions on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from orbitmesh.cli import main
from orbitmesh.models import registry

PREVIEW = registry.preview_model_dir()
# Held-out objects (seeds >= 1,000,000) the preview model must reconstruct. Floors sit below the shipped
# model's scores (48^3 IoU 0.55 / 0.45 / 0.58; PSNR 17-19 dB; Chamfer 0.037-0.055) and far above an
# untrained model of the same size (IoU 0.0).
SEEDS = (1_000_000, 1_000_001, 1_000_002)
IOU_FLOOR = 0.42
PSNR_FLOOR = 15.0


@pytest.fixture(scope="module")
def model():
    from orbitmesh.models.lrm import LRM

    return LRM.from_pretrained(PREVIEW).eval()


def test_preview_files_are_packaged():
    weights = PREVIEW / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 30 * 2**20
    config = json.loads((PREVIEW / "config.json").read_text())
    assert config["model_type"] == "orbitmesh-lrm" and config["mesh_threshold"] > 0
    card = (PREVIEW / "MODEL_CARD.md").read_text()
    for fact in ("orbitmesh train configs/preview.toml", "seed", "steps", "minutes", "CPU"):
        assert fact in card, fact
    assert (PREVIEW / "example.png").is_file()


def test_generate_default_falls_back_to_the_preview_model(tmp_path):
    source = registry.resolve_lrm_source(None, tmp_path / "empty-model-dir")
    assert source.name == "orbitmesh-preview" and source.location == str(PREVIEW)
    assert registry.resolve_lrm_source("orbitmesh-preview", tmp_path).location == str(PREVIEW)
    (tmp_path / "vfusion3d").mkdir()
    (tmp_path / "vfusion3d" / "model.safetensors").write_bytes(b"x")
    assert registry.resolve_lrm_source(None, tmp_path).name == "vfusion3d"  # a real model wins


def test_preview_reconstructs_held_out_objects(model):
    from orbitmesh.training.evaluate import score_object

    scores = [score_object(model, seed, grid=48, views=2, view_size=48, surface_points=2000) for seed in SEEDS]
    ious = [s.iou for s in scores]
    assert np.mean(ious) >= IOU_FLOOR and min(ious) >= 0.35, ious
    assert np.mean([s.psnr for s in scores]) >= PSNR_FLOOR, [s.psnr for s in scores]
    assert all(s.chamfer < 0.1 for s in scores), [s.chamfer for s in scores]


def test_preview_beats_an_untrained_model_of_the_same_size(model):
    """The IoU comes from training, not from the metric: random weights score near zero."""
    from orbitmesh.models.lrm import LRM
    from orbitmesh.training.evaluate import score_object

    torch.manual_seed(0)
    untrained = LRM(model.config).eval()
    assert score_object(untrained, SEEDS[0], grid=32, views=1, view_size=32, surface_points=500).iou < 0.2


def test_bench_quality_command(tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["bench", "quality", "--count", "2", "--grid", "32", "--views", "2", "--view-size", "32",
                 "--sheet", str(sheet), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"mean_iou", "mean_chamfer", "mean_psnr", "seconds"} <= set(result)
    assert result["model"] == "orbitmesh-preview" and result["held_out"] is True
    assert 0.0 <= result["mean_iou"] <= 1.0 and result["mean_psnr"] > 10
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.size == (3 * 128, 2 * 128)
    assert main(["bench", "quality", "--count", "0"]) == 2
