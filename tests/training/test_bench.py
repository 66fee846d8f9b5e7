"""`orbitmesh bench`: the CLI's argument declarations match each bench's `run(**keywords)`, the CLI hands
plain keywords (no argparse objects) to it, and the bench functions run from Python."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json

import numpy as np
import pytest

from orbitmesh.cli import bench as cli_bench
from orbitmesh.cli import build_parser, main
from orbitmesh.errors import InputError

BENCH_NAMES = ["postprocess", "lrm", "reconstruction", "quality", "texture-projection", "refinement",
               "text-to-image", "fast-texture", "batch"]


def declared_actions(name: str) -> dict[str, argparse.Action]:
    """dest -> argparse action of each argument the CLI declares for bench ``name``."""
    parser = argparse.ArgumentParser()
    return {action.dest: action for action in (parser.add_argument(*a.flags, **a.options)
                                               for a in cli_bench.BENCHES[name].args)}


def _plain(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def test_the_bench_names_are_the_contract():
    assert sorted(cli_bench.BENCHES) == sorted(BENCH_NAMES)
    parser = build_parser()
    for name in BENCH_NAMES:
        args = parser.parse_args(["bench", name, "--json"])
        assert args.bench == name and args.json is True and callable(args.func)


@pytest.mark.parametrize("name", BENCH_NAMES)
def test_cli_arguments_are_the_keywords_of_run_with_the_same_defaults(name):
    """Every declared argument is a keyword-only parameter of run() with the same default, and back."""
    run = importlib.import_module(f"orbitmesh.bench.{cli_bench.BENCHES[name].module}").run
    params = inspect.signature(run).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()), name
    actions = declared_actions(name)
    assert set(actions) == set(params), name
    for dest, action in actions.items():
        assert _plain(action.default) == _plain(params[dest].default), (name, dest)
        if action.choices is not None:  # the default is one of (or, for nargs, a subset of) the choices
            default = params[dest].default
            assert set(default if isinstance(default, tuple) else [default]) <= set(action.choices), (name, dest)


def test_cli_passes_plain_keywords_and_prints_json(monkeypatch, capsys):
    import orbitmesh.bench.postprocess as postprocess

    seen: dict = {}

    def fake_run(**keywords):
        seen.update(keywords)
        return {"bench": "postprocess", "seconds_total": 1.5}

    monkeypatch.setattr(postprocess, "run", fake_run)
    assert main(["bench", "postprocess", "--resolution", "48", "64", "--paths", "plain", "--json"]) == 0
    assert seen == {"resolution": [48, 64], "target_faces": 20000, "texture_size": 1024, "paths": ["plain"],
                    "repeat": 1}
    assert json.loads(capsys.readouterr().out) == {"bench": "postprocess", "seconds_total": 1.5}

    import orbitmesh.bench.lrm as lrm

    seen.clear()
    monkeypatch.setattr(lrm, "run", fake_run)
    assert main(["bench", "lrm", "--no-blob", "--grid", "32", "--config", "tiny"]) == 0
    assert seen["blob"] is False and seen["grid"] == [32] and seen["baseline"] == "extrapolate"
    assert seen["config"] == "tiny" and "seconds_total" in capsys.readouterr().out  # lrm's own table


def test_generic_table_formats_floats():
    assert cli_bench.format_table({"total_s": 1.23456, "model": "m"}).splitlines() == ["total_s  1.235",
                                                                                      "model    m"]


def test_postprocess_runs_from_python_with_plain_arguments(tmp_path):
    from orbitmesh.bench.postprocess import format_table, run

    result = run(resolution=(48,), target_faces=1500, texture_size=128, paths=("orbitmesh",))
    assert result["bench"] == "postprocess" and result["resolution"] == 48 and result["path"] == "orbitmesh"
    assert abs(result["faces"] - 1500) <= 100 and 0.3 < result["uv_coverage"] < 1.0
    assert [r["path"] for r in result["runs"]] == ["orbitmesh"]
    assert "48^3" in format_table(result)
    with pytest.raises(InputError, match="no-such-path"):
        run(resolution=(48,), paths=("no-such-path",))


def test_lrm_rejects_an_unknown_baseline_before_building_anything():
    from orbitmesh.bench.lrm import run

    with pytest.raises(InputError, match="baseline"):
        run(baseline="sometimes")


def test_reconstruction_times_both_models_one_at_a_time_with_a_surface_at_their_thresholds():
    """Tiny configs of both architectures: every key per model, TripoSR's density calibrated onto its
    threshold (25) so the band meets a surface, a per-model peak RSS, and the side-by-side table."""
    from orbitmesh.bench.reconstruction import MODELS, format_table, run

    assert cli_bench.RECONSTRUCTION_MODELS == MODELS
    result = run(size="tiny", grid=(32,), dense=True)
    assert list(result["models"]) == ["vfusion3d", "triposr"] and result["device"] == "cpu"
    keys = {"parameters", "parameters_encoder", "parameters_backbone", "build_s", "encoder_s", "backbone_s",
            "planes_shape", "threshold", "density_shift", "grid_32_s", "grid_32_cpu_s", "grid_32_band_fraction",
            "grid_32_inside_fraction", "grid_32_dense_s", "grid_32_dense_cpu_s", "peak_rss_mb"}
    for name, res in result["models"].items():
        assert keys <= set(res), (name, keys - set(res))
        assert res["parameters"] > res["parameters_encoder"] + res["parameters_backbone"] > 0
        assert res["encoder_s"] > 0 and res["backbone_s"] > 0 and res["peak_rss_mb"] > 50
        assert res["peak_rss_scope"] == "model"  # Linux: reset between models
    tsr = result["models"]["triposr"]
    assert tsr["threshold"] == 25.0 and tsr["density_shift"] > 1.0  # random weights stay far below 25
    assert 0.03 < tsr["grid_32_inside_fraction"] < 0.3  # calibrated: about the densest 10 % is inside
    assert result["models"]["vfusion3d"]["threshold"] is None  # the tiny VFusion3D: adaptive, no shift
    table = format_table(result)
    assert "vfusion3d" in table.splitlines()[2] and "triposr" in table.splitlines()[2]
    assert "grid 32^3 band s" in table and "adaptive" in table
    assert json.loads(json.dumps(result))["models"]["triposr"]["planes_shape"] == "3x8x8x8"


def test_reconstruction_calibration_puts_the_quantile_on_the_threshold():
    import torch

    from orbitmesh.bench.reconstruction import calibrate_density
    from orbitmesh.models.triposr import TripoSR, tiny
    from orbitmesh.pipeline.reconstruct import density_grid

    torch.manual_seed(0)
    model = TripoSR(tiny()).eval()
    with torch.no_grad():
        planes = model(torch.rand(1, 3, 64, 64))
    assert density_grid(model, planes, 16, method="dense").max() < 25  # nothing reaches the threshold
    shift = calibrate_density(model, planes, resolution=16, quantile=0.8)
    density = density_grid(model, planes, 16, method="dense")
    assert shift > 0 and abs(float((density > 25.0).mean()) - 0.2) < 0.01


def test_reconstruction_rejects_unknown_models_before_building_anything():
    from orbitmesh.bench.reconstruction import run

    with pytest.raises(InputError, match="hunyuan"):
        run(models=("triposr", "hunyuan"))
    with pytest.raises(InputError, match="size"):
        run(size="huge")


@pytest.mark.slow
def test_fast_texture_scores_both_runs_of_an_object_with_exactly_the_issue_keys(tmp_path):
    """One object through the fast pipeline twice (tiny-random: plumbing, not quality), the GLBs kept and the
    JSON keys exactly the issue's."""
    from orbitmesh.bench.fast_texture import KEYS, format_table, read_glb, run

    result = run(model="tiny-random", count=1, seed=1_000_003, texture_size=128, mc_resolution=40,
                 output_dir=str(tmp_path / "bench"))
    assert set(result) == {*KEYS, "objects"}
    assert set(KEYS) == {"input_psnr_before", "input_psnr_after", "near_psnr_before", "near_psnr_after",
                         "input_silhouette_iou_before", "input_silhouette_iou_after", "seconds_before",
                         "seconds_after"}
    (obj,) = result["objects"]
    assert set(obj) == {"seed", "glb_before", "glb_after"} and obj["seed"] == 1_000_003
    for key in ("glb_before", "glb_after"):
        v, f, uv, tex = read_glb(obj[key])
        assert v.shape[1] == 3 and f.max() < len(v) and uv.shape == (len(v), 2) and tex.shape == (128, 128, 3)
    assert 5 < result["input_psnr_before"] < 99 and 0 <= result["input_silhouette_iou_after"] <= 1
    assert result["seconds_before"] > 0 and "input-view PSNR" in format_table(result)
    assert json.loads(json.dumps(result)) == result


@pytest.mark.slow
def test_fast_texture_each_switch_alone_adds_the_switches_and_keeps_the_issue_keys(tmp_path):
    from orbitmesh.bench.fast_texture import KEYS, SWITCHES, format_table, run

    result = run(model="tiny-random", count=1, seed=1_000_003, texture_size=128, mc_resolution=40,
                 output_dir=str(tmp_path / "bench"), each_switch=True)
    assert set(result) == {*KEYS, "objects", "switches"} and set(result["switches"]) == set(SWITCHES)
    for tag, scores in result["switches"].items():
        assert (tmp_path / "bench" / f"1000003_{tag}.glb").is_file()
        assert set(scores) == {"input_psnr", "near_psnr", "input_silhouette_iou", "near_silhouette_iou",
                               "near_mse_both", "near_mse_mesh_only", "near_mse_truth_only", "seconds"}
        # the split adds up to the error the near-view PSNR comes from (one view at a time, so within the spread)
        total = scores["near_mse_both"] + scores["near_mse_mesh_only"] + scores["near_mse_truth_only"]
        assert 0 < total <= 1 and abs(10 * np.log10(1 / total) - scores["near_psnr"]) < 3
    for tag in ("before", "after"):
        assert result["switches"][tag]["input_psnr"] == pytest.approx(result[f"input_psnr_{tag}"], abs=1e-4)
        assert result["switches"][tag]["near_psnr"] == pytest.approx(result[f"near_psnr_{tag}"], abs=1e-4)
    assert "each switch alone" in format_table(result) and "input_texture" in format_table(result)


def test_batch_bench_times_each_executor_with_the_issue_keys(tmp_path):
    from orbitmesh.bench import batch

    assert cli_bench.BATCH_EXECUTORS == batch.EXECUTORS
    result = batch.run(items=2, executors=["local", "separate"], output_dir=str(tmp_path))
    assert result["items"] == 2 and result["done_local"] == 2 and result["done_separate"] == 2
    assert result["seconds_local"] > 0 and result["seconds_separate"] > 0 and "seconds_ray" not in result
    assert len(list((tmp_path / "local").glob("*.glb"))) == 2 and len(list((tmp_path / "separate").glob("*.glb"))) == 2
    assert "one process, model loaded once" in batch.format_table(result)
    with pytest.raises(InputError, match="unknown executors"):
        batch.run(executors=["gpu-cloud"])
