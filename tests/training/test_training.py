"""Training: config parsing, schedule, EMA, a few steps reduce the loss, checkpoints resume exactly,
the `orbitmesh train` command, folder data and the optional perceptual loss."""

from __future__ import annotations

import copy
import json
import tomllib

import pytest
import torch

from orbitmesh.cli import main
from orbitmesh.data.dataset import make_batch
from orbitmesh.errors import InputError
from orbitmesh.training import Trainer, load_config, parse_config
from orbitmesh.training.config import Stage
from orbitmesh.training.ema import EMA
from orbitmesh.training.losses import PerceptualLoss
from orbitmesh.training.schedule import learning_rate, progress_fraction, stage_at

TINY = {
    "model": {"config": {
        "input_size": 32, "camera_embed_dim": 16, "transformer_dim": 32, "transformer_layers": 1,
        "transformer_heads": 2, "triplane_low_res": 4, "triplane_high_res": 8, "triplane_dim": 8,
        "decoder_hidden_dim": 16, "decoder_layers": 3, "samples_per_ray": 16, "box_warp": 1.2,
        "bbox_min": -0.6, "bbox_max": 0.6, "mesh_threshold": 10.0,
        "encoder": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 8,
                    "image_size": 32, "pos_interpolation": "size"}}},
    "data": {"seed": 40, "count": 3, "views": 3, "view_size": 16, "points": 256, "validation_count": 0},
    "train": {"batch_size": 2, "lr": 3e-3, "warmup_steps": 1, "rays_per_sample": 64, "views_per_sample": 2,
              "points_per_sample": 128, "threads": 1, "ema_decay": 0.9},
    "stages": [{"steps": 4, "render_size": 8, "samples_per_ray": 8},
               {"steps": 4, "render_size": 16, "samples_per_ray": 12}],
    "loss": {"occupancy": 1.0, "surface_rgb": 1.0},
    "output": {"log_every": 100, "validate_every": 0, "checkpoint_every": 0, "calibrate_threshold": False},
}


def tiny_config(tmp_path, **sections):
    data = copy.deepcopy(TINY)
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    data["output"]["dir"] = str(tmp_path / "run")
    return parse_config(data)


def _quiet(msg: str) -> None:
    pass


def test_preview_config_parses(repo_root):
    cfg = load_config(repo_root / "configs" / "preview.toml")
    assert cfg.data.kind == "procedural" and cfg.data.seed + cfg.data.count <= 1_000_000
    assert cfg.total_steps > 0 and len(cfg.stages) >= 2
    assert cfg.stages[0].render_size < cfg.stages[-1].render_size


def test_config_errors(tmp_path):
    with pytest.raises(InputError, match="unknown keys in \\[train\\]"):
        tiny_config(tmp_path, train={"learning_rate": 1.0})
    with pytest.raises(InputError, match="no \\[\\[stages\\]\\]"):
        tiny_config(tmp_path, stages=[])
    with pytest.raises(InputError, match="samples_per_ray"):
        tiny_config(tmp_path, stages=[{"steps": 2, "samples_per_ray": 5}])
    with pytest.raises(InputError, match="needs folder"):
        tiny_config(tmp_path, data={"kind": "folder"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "none.toml")


def test_schedule():
    assert learning_rate(1.0, 0, 10, 0.0, 0.1) == pytest.approx(0.1)
    assert learning_rate(1.0, 50, 10, 0.0, 0.1) == pytest.approx(1.0)
    assert learning_rate(1.0, 50, 10, 0.5, 0.1) == pytest.approx(0.55)
    assert learning_rate(1.0, 50, 10, 1.0, 0.1) == pytest.approx(0.1)
    stages = [Stage(100, 32, 16), Stage(300, 64, 32)]
    assert stage_at(stages, 0.0)[0] == 0 and stage_at(stages, 0.249)[0] == 0
    assert stage_at(stages, 0.25)[0] == 1 and stage_at(stages, 1.0)[0] == 1
    assert progress_fraction(10, 100, 50.0, None) == pytest.approx(0.1)
    assert progress_fraction(10, 100, 50.0, 100.0) == pytest.approx(0.5)  # time is further along
    assert progress_fraction(500, 100, 0.0, None) == 1.0


def test_ema_tracks_the_model():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = (model.weight - ema.shadow.weight).abs().sum()
    ema.update(model)
    after = (model.weight - ema.shadow.weight).abs().sum()
    assert 0 < after < before and not ema.shadow.weight.requires_grad


def _fixed_batch(trainer: Trainer):
    data = trainer.load_data()
    return make_batch(data, [0, 1], render_size=16, rays_per_sample=64, views_per_sample=2,
                      generator=torch.Generator().manual_seed(123), points_per_sample=128)


def test_training_steps_reduce_the_loss_on_a_fixed_batch(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), device="cpu", log=_quiet)
    batch = _fixed_batch(trainer)
    stage = trainer.cfg.stages[-1]
    before = trainer.fixed_batch_loss(batch, stage)
    for _ in range(25):
        info = trainer.train_step(stage, 3e-3)
        assert torch.isfinite(torch.tensor(info["loss"]))
    after = trainer.fixed_batch_loss(batch, stage)
    assert after < 0.8 * before, (before, after)


def test_bf16_autocast_steps_train_with_float32_weights(tmp_path):
    """precision = "bf16" (the CUDA default; here on the CPU, the same autocast path): the
    transformer computes in bfloat16, the weights and the optimiser stay float32, and the loss falls."""
    trainer = Trainer(tiny_config(tmp_path, train={"precision": "bf16"}), device="cpu", log=_quiet)
    batch = _fixed_batch(trainer)
    stage = trainer.cfg.stages[-1]
    before = trainer.fixed_batch_loss(batch, stage)  # float32: evaluation runs without autocast
    seen = []
    trainer.model.transformer.layers[0].mlp[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    for _ in range(25):
        assert torch.isfinite(torch.tensor(trainer.train_step(stage, 3e-3)["loss"]))
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert trainer.fixed_batch_loss(batch, stage) < 0.8 * before


def test_3d_only_stage_with_its_own_batch_size_and_lifting(tmp_path):
    """A stage with rays_per_sample = 0 trains on occupancy + surface colour alone, with its own
    batch size, and reduces those losses; the model here lifts image features onto its tokens."""
    model_cfg = copy.deepcopy(TINY["model"])
    model_cfg["config"]["lift_samples"] = 4
    cfg = tiny_config(tmp_path, model=model_cfg, stages=[
        {"steps": 30, "render_size": 8, "samples_per_ray": 8, "rays_per_sample": 0, "batch_size": 3},
        {"steps": 4, "render_size": 16, "samples_per_ray": 12}])
    trainer = Trainer(cfg, device="cpu", log=_quiet)
    assert trainer.model.lifting is not None
    stage = cfg.stages[0]
    batch = trainer.batch(stage)
    assert batch.images.shape[0] == 3 and batch.origins.shape[1] == 0 and batch.points.shape[1] == 128
    fixed = make_batch(trainer.load_data(), [0, 1, 2], render_size=8, rays_per_sample=0, views_per_sample=2,
                       generator=torch.Generator().manual_seed(5), points_per_sample=128)
    before = trainer.fixed_batch_loss(fixed, stage)
    for _ in range(30):
        info = trainer.train_step(stage, 3e-3)
        assert "rgb" not in info and "mask" not in info and info["occupancy"] > 0
    assert trainer.fixed_batch_loss(fixed, stage) < 0.8 * before
    # The rendering stage afterwards uses train.batch_size and rays again.
    info = trainer.train_step(cfg.stages[1], 1e-3)
    assert {"rgb", "mask", "occupancy"} <= set(info)
    with pytest.raises(InputError, match="rays_per_sample"):
        tiny_config(tmp_path, stages=[{"steps": 2, "rays_per_sample": -1}])


def test_checkpoint_resumes_to_the_same_loss(tmp_path):
    cfg = tiny_config(tmp_path)
    a = Trainer(cfg, device="cpu", log=_quiet)
    stage = cfg.stages[0]
    for _ in range(3):
        a.train_step(stage, 1e-3)
    a.save()
    b = Trainer(tiny_config(tmp_path), device="cpu", log=_quiet)
    b.resume()
    assert b.step == 3
    batch = _fixed_batch(a)
    assert b.fixed_batch_loss(batch, stage) == a.fixed_batch_loss(batch, stage)
    # Training on continues identically: same batches (RNG state), same optimiser moments.
    la = [a.train_step(stage, 1e-3)["loss"] for _ in range(2)]
    lb = [b.train_step(stage, 1e-3)["loss"] for _ in range(2)]
    assert la == lb
    assert torch.equal(a.ema.shadow.transformer.pos_embed, b.ema.shadow.transformer.pos_embed)


def test_train_command_runs_exports_and_guards_the_run_folder(tmp_path, capsys):
    from orbitmesh.models.lrm import LRM

    data = copy.deepcopy(TINY)
    data["output"].update(dir=str(tmp_path / "run"), export=str(tmp_path / "model"), checkpoint_every=2)
    data["data"]["validation_count"] = 1
    data["output"]["validate_every"] = 4
    data["data"]["cache_dir"] = str(tmp_path / "cache")
    lines = []
    for section in ("data", "train", "loss", "output"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in data[section].items()]
    lines.append("[model.config]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in data["model"]["config"].items() if k != "encoder"]
    lines.append("[model.config.encoder]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in data["model"]["config"]["encoder"].items()]
    for st in data["stages"]:
        lines.append("[[stages]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in st.items()]
    config = tmp_path / "tiny.toml"
    config.write_text("\n".join(lines) + "\n")
    tomllib.loads(config.read_text())

    assert main(["train", str(config), "--steps-scale", "0.5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 4 and "val_iou" in summary
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and (tmp_path / "run" / "val_000004.png").is_file()
    assert list((tmp_path / "cache").glob("procedural-*.npz"))
    model = LRM.from_pretrained(tmp_path / "model")
    assert model.config.triplane_dim == 8 and model.config.box_warp == 1.2
    # A second run into the same folder must say how to continue.
    assert main(["train", str(config)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(config), "--resume", "--steps-scale", "0.75"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 6


def test_fine_tune_from_an_exported_model(tmp_path):
    first = Trainer(tiny_config(tmp_path), device="cpu", log=_quiet)
    first.train_step(first.cfg.stages[0], 1e-3)
    first.model.save_pretrained(tmp_path / "base")
    cfg = tiny_config(tmp_path / "ft", model={"init": str(tmp_path / "base"), "config": {}})
    second = Trainer(cfg, device="cpu", log=_quiet)
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    second.train_step(cfg.stages[0], 1e-3)


def test_grow_an_exported_model_with_context_blocks_and_a_plane_refiner(tmp_path):
    """init + [model.config] overrides: the new modules start as identities, so the grown model
    gives the checkpoint's planes exactly; it then trains; overrides that change sizes are refused."""
    model_cfg = copy.deepcopy(TINY["model"])
    model_cfg["config"]["lift_samples"] = 4
    first = Trainer(tiny_config(tmp_path, model=model_cfg), device="cpu", log=_quiet)
    first.model.save_pretrained(tmp_path / "base")
    grow = {"lift_stem_blocks": 2, "refine_dim": 8}
    cfg = tiny_config(tmp_path / "grown", model={"init": str(tmp_path / "base"), "config": grow})
    grown = Trainer(cfg, device="cpu", log=_quiet)
    assert grown.model.refiner is not None and len(grown.model.lifting.stem.context) == 2
    assert grown.model.config.lift_stem_blocks == 2 and grown.model.config.mesh_threshold == 10.0
    base_sd = first.model.state_dict()
    assert set(base_sd) < set(grown.model.state_dict())
    batch = grown.batch(cfg.stages[0])
    first.model.eval(), grown.model.eval()
    with torch.no_grad():
        assert torch.equal(first.model(batch.images, batch.source_camera),
                           grown.model(batch.images, batch.source_camera))
    grown.model.train()
    refiner_out = grown.model.refiner.out.weight.detach().clone()
    for _ in range(3):
        grown.train_step(cfg.stages[0], 3e-3)
    assert not torch.equal(refiner_out, grown.model.refiner.out.weight)  # the zero-started head learns
    with pytest.raises(InputError, match="grown config"):
        Trainer(tiny_config(tmp_path / "bad", model={"init": str(tmp_path / "base"), "config": {"triplane_dim": 6}}),
                device="cpu", log=_quiet)


def test_training_on_a_folder_of_renders(tmp_path, write_render_folder, small_procedural):
    from orbitmesh.data.dataset import procedural_dataset

    data = procedural_dataset(30, 2, small_procedural, n_points=0)
    write_render_folder(tmp_path / "renders", data, (30, 31))
    cfg = tiny_config(tmp_path, data={"kind": "folder", "folder": str(tmp_path / "renders")},
                      loss={"occupancy": 1.0, "surface_rgb": 1.0})
    trainer = Trainer(cfg, device="cpu", log=_quiet)
    info = trainer.train_step(cfg.stages[0], 1e-3)
    assert "occupancy" not in info and info["rgb"] > 0  # no 3D ground truth in a folder


def test_perceptual_loss_from_a_local_model(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    with pytest.warns(UserWarning, match="perceptual loss skipped"):
        assert PerceptualLoss.load(str(tmp_path / "missing")) is None
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=4, image_size=16)).save_pretrained(tmp_path / "dino")
    loss = PerceptualLoss.load(str(tmp_path / "dino"))
    a = torch.rand(2, 3, 16, 16)
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(a, torch.rand(2, 3, 16, 16)).item() > 1e-3
    cfg = tiny_config(tmp_path, loss={"perceptual": 0.5, "perceptual_model": str(tmp_path / "dino")})
    trainer = Trainer(cfg, device="cpu", log=_quiet)
    info = trainer.train_step(cfg.stages[-1], 1e-3)
    assert info["perceptual"] > 0


def test_growing_pool_renders_new_seeds_and_survives_a_resume(tmp_path):
    cfg = tiny_config(tmp_path, data={"count": 2, "grow_per_step": 1, "max_objects": 6})
    a = Trainer(cfg, device="cpu", log=_quiet)
    for _ in range(3):
        a.train_step(cfg.stages[0], 1e-3)
    assert a.pool_size == 5  # 2 cached + one new object per step
    # Slot 2 holds seed 42 (seed 40 + count 2): the same object procedural_dataset renders for that seed.
    from orbitmesh.data.dataset import procedural_dataset
    from orbitmesh.training.loop import procedural_config

    ref = procedural_dataset(42, 1, procedural_config(cfg, 32), n_points=256)
    assert torch.equal(a.data.view_rgb[2], ref.view_rgb[0])
    a.save()
    b = Trainer(tiny_config(tmp_path, data={"count": 2, "grow_per_step": 1, "max_objects": 6}), device="cpu",
                log=_quiet)
    b.resume()
    b.load_data()
    assert b.pool_size == 5 and torch.equal(b.data.view_rgb[:5], a.data.view_rgb[:5])
    for _ in range(3):
        b.train_step(cfg.stages[0], 1e-3)
    assert b.pool_size == 6  # capped at max_objects


def test_cancel_saves_a_checkpoint_that_resumes(tmp_path):
    from orbitmesh.errors import JobCancelled

    def cancel_at_two(stage, step, total, message=""):
        if step >= 2:
            raise JobCancelled()

    cfg = tiny_config(tmp_path, output={"log_every": 1})
    with pytest.raises(JobCancelled):
        Trainer(cfg, device="cpu", log=_quiet, progress=cancel_at_two).run()
    again = Trainer(tiny_config(tmp_path, output={"log_every": 1}), device="cpu", log=_quiet)
    summary = again.run(resume=True)
    assert summary["steps"] == cfg.total_steps and again.history[0]["step"] == 1
