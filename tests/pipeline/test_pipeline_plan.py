"""Modes as data: the stage table, the plan check, the request contract and the weighted overall progress."""

from __future__ import annotations

import pytest

from orbitmesh.errors import InputError
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import check_plan
from orbitmesh.pipeline.request import GenerateRequest, default_settings, settings_spec
from orbitmesh.pipeline.state import PipelineState
from orbitmesh.progress import ProgressTracker


def _env(settings, **request):
    from orbitmesh.models.registry import resolve_lrm_source
    from orbitmesh.pipeline.stages import StageEnv

    req = GenerateRequest(**request)
    return req, StageEnv(req, settings, "cpu", None, resolve_lrm_source("tiny-random", settings.model_dir))


@pytest.mark.parametrize("mode", list(modes.MODES))
@pytest.mark.parametrize("source", ["image", "prompt"])
def test_every_mode_builds_its_table_row_and_passes_the_plan_check(tmp_path, mode, source, cpu_settings):
    from orbitmesh.pipeline.stages import build_stages

    source_request = {"image_path": "x.png"} if source == "image" else {"prompt": "a cup"}
    req, env = _env(cpu_settings(tmp_path), mode=mode, **source_request)
    stages = build_stages(env)
    assert [s.name for s in stages] == modes.stage_names(mode, prompt=source == "prompt")
    assert all(s.name in modes.STAGES for s in stages)
    initial = PipelineState(image_path=req.image_path, prompt=req.prompt)
    check_plan(stages, initial.given())  # every need met by the request or an earlier stage
    mesh = next(s for s in stages if s.name == modes.MESH)
    assert type(mesh).__name__ == ("QualityMeshStage" if mode == "quality" else "MeshStage")


def test_request_settings_reach_their_stages(tmp_path, cpu_settings):
    from orbitmesh.pipeline.orbit import OrbitConfig
    from orbitmesh.pipeline.stages import build_stages

    _, env = _env(cpu_settings(tmp_path), mode="quality", image_path="x.png", orbit_steps=7, seed=11,
                  mc_resolution=64, target_faces=900, texture_size=256, output=str(tmp_path / "o.glb"))
    by_name = {s.name: s for s in build_stages(env)}
    assert by_name[modes.ORBIT].config.steps == 7 and by_name[modes.ORBIT].config.seed == 11
    assert by_name[modes.GRID_QUERY].resolution == 64
    assert (by_name[modes.MESH].target_faces, by_name[modes.MESH].texture_size) == (900, 256)
    assert by_name[modes.EXPORT].output == str(tmp_path / "o.glb")
    assert OrbitConfig().steps == default_settings()["orbit_steps"]  # one default, the contract's


def test_plan_check_names_the_missing_field(tmp_path, cpu_settings):
    from orbitmesh.pipeline.stages import build_stages

    _, env = _env(cpu_settings(tmp_path), image_path="x.png")
    stages = build_stages(env)
    grid = next(s for s in stages if s.name == modes.GRID_QUERY)
    with pytest.raises(ValueError, match="grid_query.*needs lrm"):
        check_plan([grid], {"image_path"})
    with pytest.raises(ValueError, match="preprocess.*image_path or image"):
        check_plan(stages, set())  # no source at all


def test_tracker_progress_is_weighted_and_monotone():
    stages = modes.stage_names("fast")
    tracker = ProgressTracker()
    tracker.plan(stages, modes.stage_weights(stages))  # as the orchestrator does
    seen = []
    for stage in stages:
        for step in range(5):
            tracker(stage, step, 4)
            seen.append(tracker.latest.progress)
        tracker(stage, 0, 1, "a stage restarting its count")  # never moves the bar back
        seen.append(tracker.latest.progress)
    assert seen == sorted(seen) and seen[-1] == 0.999
    weights = [modes.STAGES[s].weight for s in stages]
    # after preprocess, the bar stands at preprocess's share of the total weight
    assert seen[4] == pytest.approx(weights[0] / sum(weights), abs=1e-3)
    assert modes.overall_progress(stages, "no-such-stage", 1, 1) == 0.0


def test_settings_validation_is_apart_from_the_source():
    GenerateRequest().validate_settings()  # no source needed for the settings half
    with pytest.raises(InputError, match="exactly one source"):
        GenerateRequest().validate()
    with pytest.raises(InputError, match="mc_resolution") as err:
        GenerateRequest(mc_resolution=4096).validate_settings()
    assert "32 and 1024" in err.value.message and err.value.fix
    with pytest.raises(InputError, match="unknown mode"):
        GenerateRequest(mode="slow").validate_settings()
    with pytest.raises(InputError, match="model must be non-empty text"):
        GenerateRequest(model="  ").validate_settings()
    with pytest.raises(InputError, match="unknown settings"):
        GenerateRequest.from_settings({"seeds": 3})
    with pytest.raises(InputError, match="unknown settings"):  # the source is not a client setting
        GenerateRequest.from_settings({"image_path": "/etc/passwd"})


def test_saved_requests_from_older_versions_still_load():
    old = {"image_path": "a.png", "mode": "fast", "seed": 7, "mc_resolution": 128, "removed_setting": 1}
    with pytest.warns(UserWarning, match="removed_setting"):
        req, notes = GenerateRequest.from_saved(old)
    assert req.seed == 7 and req.mc_resolution == 128 and req.texture_size == default_settings()["texture_size"]
    assert notes and "removed_setting" in notes[0]


def test_cli_server_and_defaults_derive_from_the_contract():
    import argparse

    from orbitmesh.cli.common import add_request_args, request_settings_from_args
    from orbitmesh.server.jobs import CLIENT_SETTINGS

    assert CLIENT_SETTINGS == tuple(settings_spec())
    parser = argparse.ArgumentParser()
    add_request_args(parser)
    assert request_settings_from_args(parser.parse_args([])) == default_settings()
    args = parser.parse_args(["--mc-resolution", "64", "--mode", "quality", "--text-to-image-model", "x/y"])
    assert request_settings_from_args(args) == {**default_settings(), "mc_resolution": 64, "mode": "quality",
                                                "text_to_image_model": "x/y"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "slow"])  # choices come from the mode table
