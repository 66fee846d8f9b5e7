"""Text-to-image stage: prompt template and validation, a tiny local diffusers pipeline
(tiny UNet, VAE, CLIP text encoder and a BPE tokenizer built from a small vocabulary here,
no hub) loaded through ``from_pretrained(folder, local_files_only=True)`` and run on CPU."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image

from orbitmesh.bench.tiny_text_to_image import build_tiny_pipeline
from orbitmesh.errors import InputError, JobCancelled, ModelError
from orbitmesh.jobs import JobFolder
from orbitmesh.models import catalogue
from orbitmesh.models.text_to_image import DEFAULT_MODEL, find_local_model, from_pretrained, model_family_defaults
from orbitmesh.pipeline import Orchestrator, StageContext
from orbitmesh.pipeline.prompting import NEGATIVE_PROMPT, PROMPT_TEMPLATE, build_prompt, validate_prompt
from orbitmesh.pipeline.text_to_image import TextToImageConfig, TextToImageStage, choose_candidate, foreground_score
from orbitmesh.progress import ProgressTracker

TINY_STEPS = 3
EXTRA_WORDS = "a wooden chair red cube small toy robot with hat"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """Folder of the tiny pipeline, named like a distilled model (so the turbo defaults apply
    when steps/guidance are left unset)."""
    folder = tmp_path_factory.mktemp("t2i") / "tiny-sd-turbo"
    build_tiny_pipeline(folder, EXTRA_WORDS)
    return folder


def _run_stage(tmp_path, model, prompt, seed=7, tracker=None, **cfg):
    job = JobFolder.create(tmp_path, "prompt job")
    ctx = StageContext(job=job, progress=tracker or ProgressTracker(), state={"prompt": prompt, "seed": seed})
    config = TextToImageConfig(model=str(model), local_files_only=True, device="cpu", dtype="float32",
                               **{"steps": TINY_STEPS, "guidance_scale": 5.0, **cfg})
    TextToImageStage(config).run(ctx)
    return job, ctx


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# -- prompts -------------------------------------------------------------------------

@pytest.mark.parametrize("bad, words", [
    (None, "no prompt"), ("", "empty"), ("   \n\t ", "whitespace"), ("\x00\u200b", "control"),
    (42, "must be text, got int"), (b"a chair", "got bytes"), (["a chair"], "got list"),
])
def test_bad_prompts_are_input_errors_with_a_fix(bad, words):
    with pytest.raises(InputError, match=words) as info:
        validate_prompt(bad)
    assert info.value.fix


def test_template_wraps_the_raw_prompt():
    plan = build_prompt("  a  wooden\tchair\x00 ")
    assert plan.raw == "  a  wooden\tchair\x00 " and plan.user_part == "a wooden chair"
    assert plan.effective.startswith("a wooden chair, ")
    for phrase in ("single whole object", "centered", "three-quarter view", "plain white background"):
        assert phrase in plan.effective
    assert plan.negative == NEGATIVE_PROMPT and "cropped" in plan.negative and "multiple objects" in plan.negative
    assert not plan.truncated and plan.warnings == []
    assert build_prompt("a chair", template=None).effective == "a chair"


def test_overlong_prompt_is_truncated_to_the_tokenizer_limit_with_a_warning(tiny_model):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    raw = " ".join(["a red wooden chair with a small toy robot"] * 20)
    plan = build_prompt(raw, [tok])
    n = len(tok(plan.effective)["input_ids"])
    assert plan.truncated and plan.max_tokens == 75
    assert 60 <= n <= 77  # filled up to the limit (start/end included), not beyond
    assert plan.effective.endswith(PROMPT_TEMPLATE.split("{prompt}")[1])  # the framing survives
    assert raw.startswith(plan.user_part) and len(plan.user_part) < len(raw)
    assert len(plan.warnings) == 1 and "too long" in plan.warnings[0] and "75 tokens" in plan.warnings[0]
    # A short prompt is left alone.
    assert not build_prompt("a red cube", [tok]).truncated
    # Pasted megabytes are cut by characters first (and still fit the tokenizer).
    huge = build_prompt("chair " * 200_000, [tok])
    assert huge.truncated and len(tok(huge.effective)["input_ids"]) <= 77


# -- configuration, models -------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("steps", 0), ("steps", 2.5), ("guidance_scale", math.nan),
                                          ("guidance_scale", -1.0), ("width", 100), ("height", 4096),
                                          ("num_candidates", 0), ("device", "tpu"), ("model", " ")])
def test_bad_config_values(field, value):
    with pytest.raises(InputError, match=field.split("_")[0] if field != "model" else "model") as info:
        TextToImageConfig(**{field: value}).validate()
    assert info.value.fix


def test_family_defaults():
    assert model_family_defaults(DEFAULT_MODEL) == (4, 0.0)
    assert model_family_defaults("/models/stabilityai/sdxl-turbo") == (4, 0.0)
    assert model_family_defaults("/models/my-sdxl-lightning-4step", "StableDiffusionXLPipeline") == (4, 0.0)
    assert model_family_defaults("/models/my-finetune", "StableDiffusionXLPipeline") == (30, 6.0)
    assert model_family_defaults("/models/my-finetune", "StableDiffusionPipeline") == (30, 7.5)


@pytest.mark.usefixtures("no_user_hub_cache")
def test_model_list_has_licences_and_one_default(tmp_path):
    entries = catalogue.models("text_to_image")
    assert [e.name for e in entries if e.default] == [DEFAULT_MODEL]
    assert all(e.licence and e.licence_url.startswith("https://") for e in entries)
    default = catalogue.get(DEFAULT_MODEL)
    assert default.licence == "Stability AI Community License" and default.commercial == "conditional"
    assert default.text_to_image.steps <= 4 and default.text_to_image.guidance_scale == 0
    # A folder under the model dir named after the hub id counts as available (no network).
    sd_turbo = catalogue.get("stabilityai/sd-turbo")
    assert not sd_turbo.is_available(tmp_path)
    folder = tmp_path / "stabilityai" / "sd-turbo"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    assert find_local_model("stabilityai/sd-turbo", tmp_path) == folder
    assert sd_turbo.is_available(tmp_path)


def test_missing_model_is_a_model_error_naming_licence_and_fix(tmp_path):
    if find_local_model(DEFAULT_MODEL, tmp_path) is not None:
        pytest.skip("the default model is in this machine's hub cache")
    with pytest.raises(ModelError) as info:
        from_pretrained(DEFAULT_MODEL, local_files_only=True, model_dir=tmp_path)
    assert DEFAULT_MODEL in info.value.message and "offline" in info.value.message
    assert "Community License" in info.value.fix and "hf download" in info.value.fix
    assert str(tmp_path / DEFAULT_MODEL) in info.value.fix
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a diffusers pipeline"):
        from_pretrained(str(tmp_path / "empty"), local_files_only=True)


def test_unreachable_hub_fails_fast_without_downloading(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelError, match="hub is unreachable") as info:
        from_pretrained("someone/not-downloaded-model", local_files_only=False, model_dir=tmp_path)
    assert "hf download someone/not-downloaded-model" in info.value.fix
    assert not any(tmp_path.iterdir())


def test_foreground_score_prefers_a_whole_centred_object():
    white = np.full((64, 64, 3), 255, np.uint8)
    centred = white.copy()
    centred[16:48, 20:44] = (120, 60, 20)
    cut = white.copy()
    cut[20:50, 40:64] = (120, 60, 20)  # touches the right border
    score, touching = foreground_score(Image.fromarray(centred))
    assert score == pytest.approx(32 * 24 / 64**2) and not touching
    assert foreground_score(Image.fromarray(cut)) == (0.0, True)
    assert foreground_score(Image.fromarray(white)) == (0.0, False)


# -- the stage on the tiny pipeline ----------------------------------------------------

def test_tiny_pipeline_loads_through_auto_pipeline(tiny_model):
    pipe = from_pretrained(str(tiny_model), local_files_only=True)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.tokenizer.model_max_length == 77 and pipe.tokenizer("<|startoftext|>")["input_ids"]


def test_stage_writes_image_records_prompts_and_reports_steps(tmp_path, tiny_model):
    events = []
    tracker = ProgressTracker(listener=events.append)
    job, ctx = _run_stage(tmp_path, tiny_model, "a wooden chair", tracker=tracker)
    image_path = job.path / "prompt_image.png"
    assert ctx.state.image_path == str(image_path)
    with Image.open(image_path) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
        pixels = np.asarray(im, dtype=np.float32)
    assert (pixels[:3] == 255).all() and pixels[24:40, 24:40].std() > 1.0  # white border, textured object
    assert foreground_score(Image.fromarray(pixels.astype(np.uint8)))[0] > 0.3
    assert not ctx.state.warnings
    rec = json.loads((job.path / "job.json").read_text())["text_to_image"]
    assert rec["prompt"] == "a wooden chair" and rec["effective_prompt"] == ctx.state.effective_prompt
    assert rec["effective_prompt"].startswith("a wooden chair, ") and rec["negative_prompt"] == NEGATIVE_PROMPT
    assert rec["model"] == str(tiny_model) and rec["steps"] == TINY_STEPS and rec["guidance_scale"] == 5.0
    assert rec["negative_prompt_used"] and rec["seed"] == 7 and not rec["truncated"]
    assert "prompt_image.png" in json.loads((job.path / "job.json").read_text())["artefacts"]
    steps = [e for e in events if e.stage == "text_to_image" and e.step > 0]
    assert [(e.step, e.total) for e in steps] == [(i, TINY_STEPS) for i in range(1, TINY_STEPS + 1)]


def test_same_seed_same_image_other_seed_other_image(tmp_path, tiny_model):
    a, _ = _run_stage(tmp_path, tiny_model, "a red cube", seed=3)
    b, _ = _run_stage(tmp_path, tiny_model, "a red cube", seed=3)
    c, _ = _run_stage(tmp_path, tiny_model, "a red cube", seed=4)
    assert _sha(a.path / "prompt_image.png") == _sha(b.path / "prompt_image.png")
    assert _sha(a.path / "prompt_image.png") != _sha(c.path / "prompt_image.png")


def test_turbo_defaults_skip_guidance_and_negative_prompt(tmp_path, tiny_model):
    # steps/guidance unset -> the family defaults of a distilled ("turbo") model: 4 steps, no guidance,
    # and so no negative prompt (only classifier-free guidance reads it).
    events = []
    job, _ = _run_stage(tmp_path, tiny_model, "a red cube", tracker=ProgressTracker(listener=events.append),
                        steps=None, guidance_scale=None)
    rec = json.loads((job.path / "job.json").read_text())["text_to_image"]
    assert rec["steps"] == 4 and rec["guidance_scale"] == 0.0 and not rec["negative_prompt_used"]
    assert max(e.step for e in events if e.stage == "text_to_image") == 4
    # Explicit values win over the family defaults.
    job, _ = _run_stage(tmp_path, tiny_model, "a red cube", steps=1, guidance_scale=2.0)
    rec = json.loads((job.path / "job.json").read_text())["text_to_image"]
    assert rec["steps"] == 1 and rec["guidance_scale"] == 2.0 and rec["negative_prompt_used"]


def test_candidates_are_written_and_the_best_foreground_is_chosen(tmp_path, tiny_model):
    job, ctx = _run_stage(tmp_path, tiny_model, "a small toy robot", seed=11, num_candidates=3, steps=1)
    rec = json.loads((job.path / "job.json").read_text())["text_to_image"]
    assert rec["candidates"] == [f"prompt_candidate_{i}.png" for i in range(3)]
    assert len({_sha(job.path / name) for name in rec["candidates"]}) == 3  # seeds 11, 12, 13
    scores = [round(foreground_score(Image.open(job.path / name))[0], 4) for name in rec["candidates"]]
    assert rec["foreground_scores"] == scores and rec["chosen"] == int(np.argmax(scores))
    assert _sha(job.path / "prompt_image.png") == _sha(job.path / rec["candidates"][rec["chosen"]])
    # Candidate i uses seed + i: candidate 0 equals the single image of the same seed.
    single, _ = _run_stage(tmp_path, tiny_model, "a small toy robot", seed=11, steps=1)
    assert _sha(single.path / "prompt_image.png") == _sha(job.path / "prompt_candidate_0.png")


def test_choose_candidate_prefers_the_whole_object():
    white = np.full((64, 64, 3), 255, np.uint8)
    cut, small, whole = white.copy(), white.copy(), white.copy()
    cut[10:60, 30:64] = 90  # biggest, but cut off by the right border
    small[28:36, 28:36] = 90
    whole[12:52, 14:50] = 90
    index, scores = choose_candidate([Image.fromarray(a) for a in (cut, small, whole, white)])
    assert index == 2 and scores[0] == 0.0 and scores[3] == 0.0 and scores[2] > scores[1] > 0


def test_overlong_prompt_in_the_stage_warns_and_records(tmp_path, tiny_model):
    raw = "a wooden chair " * 60
    job, ctx = _run_stage(tmp_path, tiny_model, raw, steps=1)
    rec = json.loads((job.path / "job.json").read_text())["text_to_image"]
    assert rec["prompt"] == raw and rec["truncated"] and len(rec["effective_prompt"]) < len(raw)
    assert any("prompt too long" in w for w in ctx.state.warnings)


def test_bad_prompt_fails_before_loading_the_model(tmp_path):
    job = JobFolder.create(tmp_path, "bad")
    stage = TextToImageStage(TextToImageConfig(model=str(tmp_path / "no-such-model"), local_files_only=True))
    for bad in ("   ", 3.5):
        with pytest.raises(InputError):
            stage.run(StageContext(job=job, state={"prompt": bad, "seed": 1}))
    with pytest.raises(InputError, match="seed"):
        stage.run(StageContext(job=job, state={"prompt": "a chair", "seed": -1}))


def test_cancel_between_steps_leaves_no_image(tmp_path, tiny_model):
    tracker = ProgressTracker()
    tracker.listener = lambda e: tracker.cancel() if e.stage == "text_to_image" and e.step == 1 else None
    job = JobFolder.create(tmp_path, "cancel me")
    stage = TextToImageStage(TextToImageConfig(model=str(tiny_model), local_files_only=True, device="cpu",
                                               steps=TINY_STEPS, guidance_scale=0.0))
    with pytest.raises(JobCancelled) as info:
        Orchestrator([stage]).run(job, tracker, state={"prompt": "a chair", "seed": 1})
    assert not (job.path / "prompt_image.png").exists()
    assert tracker.latest.step == 1  # stopped right after the first denoising step
    assert json.loads((job.path / "job.json").read_text())["status"] == "cancelled"
    # Released while the exception (whose traceback passed through diffusers' frames) is still held,
    # as a server keeping a failed job's error would.
    assert info.value.__traceback__ is not None and _live_pipelines() == 0


def _live_pipelines() -> int:
    import gc

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "StableDiffusionPipeline")


def test_pipeline_is_released_after_the_stage(tmp_path, tiny_model):
    _run_stage(tmp_path, tiny_model, "a red cube", steps=1)
    assert _live_pipelines() == 0


def test_doctor_shows_the_default_text_to_image_model(tmp_path, capsys):
    from orbitmesh.cli import main

    assert main(["doctor", "--model-dir", str(tmp_path)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("text-to-image default:"))
    assert DEFAULT_MODEL in line and "Stability AI Community License; commercial use: conditional" in line


def test_generate_cli_prompt_to_glb(tmp_path, tiny_model):
    """``orbitmesh generate --prompt`` end to end on CPU: tiny text-to-image -> preprocess ->
    tiny-random LRM -> GLB, the same seed giving the same image as the stage alone."""
    trimesh = pytest.importorskip("trimesh")
    from orbitmesh.cli import main

    out = tmp_path / "chair.glb"
    rc = main(["generate", "--prompt", "a wooden chair", "--text-to-image-model", str(tiny_model),
               "--model", "tiny-random", "-o", str(out), "--output-dir", str(tmp_path / "jobs"), "--seed", "5",
               "--device", "cpu", "--dtype", "float32", "--mc-resolution", "32", "--target-faces", "500",
               "--texture-size", "64", "--quiet"])
    assert rc == 0
    (job_dir,) = (tmp_path / "jobs").iterdir()
    record = json.loads((job_dir / "job.json").read_text())
    assert record["status"] == "done" and record["stages"][:2] == ["text_to_image", "preprocess"]
    t2i = record["text_to_image"]
    assert t2i["prompt"] == "a wooden chair" and t2i["effective_prompt"].startswith("a wooden chair, ")
    assert t2i["steps"] == 4 and t2i["guidance_scale"] == 0.0 and t2i["seed"] == 5
    assert {"prompt_image.png", "preprocessed.png", "model.glb"} <= set(record["artefacts"])
    alone, _ = _run_stage(tmp_path / "alone", tiny_model, "a wooden chair", seed=5, steps=None, guidance_scale=None)
    assert _sha(job_dir / "prompt_image.png") == _sha(alone.path / "prompt_image.png")
    assert out.read_bytes()[:4] == b"glTF" and _sha(out) == _sha(job_dir / "model.glb")
    mesh = trimesh.load(out, force="mesh")
    assert len(mesh.faces) > 0 and len(mesh.vertices) > 0
