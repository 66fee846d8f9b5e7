"""The LRM training loop: random rays per supervision view, multi-stage schedule, AdamW + cosine LR,
gradient clipping, EMA, bf16 autocast on GPUs, checkpoint/resume, a progress line with loss and ETA,
periodic validation (metrics + a PNG of renders) and export of the EMA model.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from orbitmesh import atomic
from orbitmesh.data.dataset import MultiViewData, RayBatch, folder_dataset, make_batch, procedural_dataset
from orbitmesh.data.procedural import ProceduralConfig
from orbitmesh.errors import InputError, JobCancelled
from orbitmesh.progress import null_progress
from orbitmesh.training.checkpoints import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from orbitmesh.training.config import Stage, TrainConfig
from orbitmesh.training.ema import EMA
from orbitmesh.training.losses import PerceptualLoss, mask_loss, occupancy_loss, rgb_loss
from orbitmesh.training.schedule import learning_rate, progress_fraction, stage_at

RESUME_POOL = 128  # grown objects re-rendered when a run with a growing pool resumes

# -- model ------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, model_dir: str | Path | None = None):
    """A fresh LRM from preset + overrides, or the checkpoint named by ``model.init`` (fine-tuning).

    ``init`` with ``[model.config]`` overrides grows the checkpoint: the model is built from its
    config plus the overrides, takes every checkpoint weight (same names, same shapes) and keeps
    its initialisation only in the modules the overrides add (the lifting's context blocks and
    the plane refiner start as identities, so the grown model starts as the checkpoint).
    """
    from orbitmesh.models.lrm import LRM, LRMConfig, preset

    overrides = dict(cfg.model.config)
    if cfg.model.init:
        from orbitmesh.models.registry import load_lrm, resolve_lrm_source
        from orbitmesh.settings import load_settings

        model_dir = model_dir or load_settings().model_dir
        model = load_lrm(resolve_lrm_source(cfg.model.init, model_dir), model_dir=model_dir, device="cpu",
                         dtype=torch.float32, local_files_only=True)
        if not overrides:
            return model.float().train()
        torch.manual_seed(cfg.train.seed)
        grown = LRM(_with_overrides(model.config, overrides))
        return load_grown(grown, model.state_dict()).train()
    base = preset(cfg.model.preset) if cfg.model.preset else LRMConfig()
    torch.manual_seed(cfg.train.seed)
    model = LRM(_with_overrides(base, overrides))
    if cfg.train.init_pos_embed == "sincos":
        init_sincos_positions(model)
    return model.train()


def _with_overrides(base, overrides: dict):
    from orbitmesh.models.lrm import LRMConfig

    data = base.to_dict()
    overrides = dict(overrides)
    enc = {**data["encoder"], **overrides.pop("encoder", {})}
    return LRMConfig.from_dict({**data, **overrides, "encoder": enc})


def load_grown(model, state_dict: dict[str, torch.Tensor]):
    """Load ``state_dict`` into a model that may have more modules; every checkpoint tensor must
    find its place (same name and shape), or the error names those that do not."""
    from orbitmesh.errors import ModelError
    from orbitmesh.models.lrm.loading import check_state_dict

    try:
        check_state_dict(model, state_dict, allow_missing=True)
    except ModelError as exc:
        raise InputError(f"the checkpoint does not fit the grown config: {exc.message}",
                         fix="[model.config] may only add modules (lift_stem_blocks, refine_dim), "
                             "not change the checkpoint's sizes") from exc
    model.load_state_dict(state_dict, strict=False)
    return model


@torch.no_grad()
def init_sincos_positions(model) -> None:
    """Set the encoder's patch position embeddings to a 2D sin-cos code with unit variance (CLS: zeros)."""
    emb = model.encoder.model.embeddings.position_embeddings  # (1, 1 + side^2, D)
    n, dim = emb.shape[1] - 1, emb.shape[2]
    side = int(math.isqrt(n))
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                indexing="ij")
    parts = []
    for axis in (rows.reshape(-1), cols.reshape(-1)):
        angle = axis[:, None] * freqs[None]
        parts += [torch.sin(angle), torch.cos(angle)]
    code = torch.cat(parts, dim=1)
    code = torch.cat([code, torch.zeros(n, dim - code.shape[1])], dim=1) * math.sqrt(2.0)
    emb[0, 1:] = code.to(emb.dtype)
    emb[0, :1] = 0.0


def model_summary(model) -> dict:
    n = sum(p.numel() for p in model.parameters())
    return {"parameters": n, "megabytes_fp32": round(n * 4 / 2**20, 2)}


# -- data -------------------------------------------------------------------------------------------
def procedural_config(cfg: TrainConfig, input_size: int) -> ProceduralConfig:
    d = cfg.data
    return ProceduralConfig(input_size=d.input_size or input_size, input_jitter_deg=d.input_jitter_deg,
                            view_size=d.view_size, views=d.views)


def build_data(cfg: TrainConfig, input_size: int, progress: Callable = null_progress) -> MultiViewData:
    d = cfg.data
    if d.kind == "folder":
        return folder_dataset(d.folder, d.input_size or input_size, d.view_size)
    return procedural_dataset(d.seed, d.count, procedural_config(cfg, input_size), n_points=d.points,
                              cache_dir=d.cache_dir, workers=d.workers,
                              progress=lambda i, n: progress("data", i, n, "rendering procedural objects"))


# -- one step ---------------------------------------------------------------------------------------
def autocast(device: str, precision: str):
    if device == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compute_losses(model, batch: RayBatch, stage: Stage, cfg: TrainConfig, generator: torch.Generator | None,
                   perceptual: PerceptualLoss | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Render the batch's rays (and query its 3D points); returns (total loss, parts as floats)."""
    from orbitmesh.models.lrm.renderer import RenderOptions, render_rays
    from orbitmesh.models.lrm.triplane import activate_density

    c, w = model.config, cfg.loss
    planes = model(batch.images, batch.source_camera)
    half = stage.samples_per_ray // 2
    opts = RenderOptions(half, half, c.box_warp, c.bbox_min, c.bbox_max)
    parts = {}
    if batch.origins.shape[1]:  # a 3D-only stage has no rays
        rgb, _, weight = render_rays(lambda p: model.query_raw(planes, p), batch.origins, batch.dirs, opts,
                                     deterministic=False, generator=generator)
        parts = {"rgb": rgb_loss(rgb, batch.rgb), "mask": mask_loss(weight, batch.alpha)}
    if w.occupancy > 0 and batch.points is not None:
        density = activate_density(model.query_raw(planes, batch.points)["sigma"])
        parts["occupancy"] = occupancy_loss(density, batch.occupancy, w.occupancy_density)
    if w.surface_rgb > 0 and batch.surface_points is not None:
        parts["surface_rgb"] = rgb_loss(model.query_raw(planes, batch.surface_points)["rgb"], batch.surface_rgb)
    if perceptual is not None and w.perceptual > 0:
        parts["perceptual"] = _perceptual_term(model, planes, batch, stage, opts, perceptual, generator)
    weights = {"rgb": w.rgb, "mask": w.mask, "occupancy": w.occupancy, "surface_rgb": w.surface_rgb,
               "perceptual": w.perceptual}
    total = sum(weights[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _perceptual_term(model, planes, batch: RayBatch, stage: Stage, opts, perceptual: PerceptualLoss,
                     generator) -> torch.Tensor:
    """The batch's rays arranged as square patches: the first side^2 rays of each sample."""
    from orbitmesh.models.lrm.renderer import render_rays

    side = int(math.isqrt(batch.origins.shape[1]))
    n = side * side
    rgb, _, _ = render_rays(lambda p: model.query_raw(planes, p), batch.origins[:, :n], batch.dirs[:, :n], opts,
                            deterministic=False, generator=generator)
    as_img = lambda x: x.reshape(x.shape[0], side, side, 3).permute(0, 3, 1, 2)  # noqa: E731
    return perceptual(as_img(rgb), as_img(batch.rgb[:, :n]))


# -- the trainer ------------------------------------------------------------------------------------
class Trainer:
    """Runs a :class:`TrainConfig`. ``run()`` trains (resuming from ``output.dir`` when asked) and
    returns a summary; ``progress(stage, step, total, message)`` may raise JobCancelled."""

    def __init__(self, cfg: TrainConfig, *, device: str | None = None, progress: Callable = null_progress,
                 log: Callable[[str], None] | None = None, model_dir: str | Path | None = None) -> None:
        from orbitmesh.device import resolve_device

        self.cfg = cfg
        self.device = device or resolve_device(cfg.train.device)
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.run_dir = Path(cfg.output.dir)
        self.model = build_model(cfg, model_dir).to(self.device)
        self.data: MultiViewData | None = None
        self.pool_size = 0  # objects of self.data in use (a growing pool has spare capacity)
        self.generator = torch.Generator().manual_seed(cfg.train.seed)
        # fused: one kernel per step instead of a dozen per parameter (a large share of a small model's step)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas),
                                           weight_decay=cfg.train.weight_decay, fused=self.device in ("cpu", "cuda"))
        self.ema = EMA(self.model, cfg.train.ema_decay)
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.perceptual = (PerceptualLoss.load(cfg.loss.perceptual_model, self.device)
                           if cfg.loss.perceptual > 0 else None)

    # -- state ------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def save(self) -> Path:
        return save_checkpoint(self.checkpoint_path, model=self.model, ema=self.ema, optimizer=self.optimizer,
                               step=self.step, elapsed_s=self.elapsed, generator=self.generator,
                               config=self.cfg.source, history=self.history)

    def resume(self, path: str | Path | None = None) -> None:
        state = load_checkpoint(path or self.checkpoint_path)
        try:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
        except RuntimeError as exc:
            raise InputError(f"the checkpoint does not match this config's model: {exc}",
                             fix="resume with the config the run was started with") from exc
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.elapsed, self.history = state["step"], state["elapsed_s"], state["history"]
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def load_data(self) -> MultiViewData:
        if self.data is None:
            data = build_data(self.cfg, self.model.config.input_size, self.progress)
            self.pool_size = len(data)
            d = self.cfg.data
            if d.kind == "procedural" and d.grow_per_step and (d.max_objects or 0) > d.count:
                self.data = data.with_capacity(d.max_objects)
                # After a resume: the cached objects plus the most recent RESUME_POOL grown ones
                # (re-rendering thousands would stall the restart); growth then continues with new seeds.
                grown = self.grown_objects(self.step)
                keep = min(grown, RESUME_POOL)
                if keep:
                    self._add_objects(d.seed + d.count + grown - keep, keep)
            else:
                self.data = data
        return self.data

    def grown_objects(self, step: int) -> int:
        """How many objects the pool has gained by ``step`` (a pure function of the step)."""
        d = self.cfg.data
        cap = (d.max_objects or d.count) - d.count
        return max(0, min(cap, step * d.grow_per_step))

    def _add_objects(self, first_seed: int, n: int) -> None:
        from orbitmesh.data.dataset import render_procedural

        extra = render_procedural(list(range(first_seed, first_seed + n)),
                                  procedural_config(self.cfg, self.model.config.input_size), self.cfg.data.points)
        self.data.write(self.pool_size, extra)
        self.pool_size += n

    def grow(self) -> None:
        """Render this step's new objects into the pool (procedural data with grow_per_step)."""
        d = self.cfg.data
        have, want = self.grown_objects(self.step), self.grown_objects(self.step + 1)
        if want > have:
            self._add_objects(d.seed + d.count + have, want - have)

    # -- steps --------------------------------------------------------------------------------------
    def batch(self, stage: Stage) -> RayBatch:
        data = self.load_data()
        t = self.cfg.train
        batch_size = stage.batch_size or t.batch_size
        rays = t.rays_per_sample if stage.rays_per_sample is None else stage.rays_per_sample
        idx = torch.randint(0, self.pool_size, (batch_size,), generator=self.generator)
        return make_batch(data, idx, render_size=min(stage.render_size, data.view_rgb.shape[2]),
                          rays_per_sample=rays, views_per_sample=min(t.views_per_sample, data.view_rgb.shape[1]),
                          generator=self.generator, fg_fraction=t.fg_fraction,
                          points_per_sample=t.points_per_sample).to(self.device)

    def train_step(self, stage: Stage, lr: float) -> dict[str, float]:
        self.model.train()
        self.load_data()
        if self.cfg.data.kind == "procedural" and self.cfg.data.grow_per_step and len(self.data) > self.pool_size:
            self.grow()
        batch = self.batch(stage)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        gen = self.generator if self.device == "cpu" else None
        with autocast(self.device, self.cfg.train.precision):
            total, parts = compute_losses(self.model, batch, stage, self.cfg, gen, self.perceptual)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return {"loss": float(total.detach()), **parts, "grad_norm": float(grad_norm), "lr": lr}

    @torch.no_grad()
    def fixed_batch_loss(self, batch: RayBatch, stage: Stage, seed: int = 0) -> float:
        """The loss of the live model on ``batch`` with a fixed sampling seed (tests, sanity checks)."""
        self.model.eval()
        gen = torch.Generator().manual_seed(seed) if self.device == "cpu" else None
        total, _ = compute_losses(self.model, batch.to(self.device), stage, self.cfg, gen, self.perceptual)
        return float(total)

    # -- validation --------------------------------------------------------------------------------
    def validate(self) -> dict:
        """Score the EMA model on a few validation objects; writes ``val_STEP.png`` in the run dir."""
        from orbitmesh.training.evaluate import contact_sheet, score_object

        model = self.ema.shadow
        d = self.cfg.data
        if d.kind != "procedural" or d.validation_count <= 0:
            return {}
        cfg = replace(procedural_config(self.cfg, model.config.input_size), views=0, include_input_view=False)
        scores = [score_object(model, d.validation_seed + i, grid=48, views=4, view_size=64, surface_points=3000,
                               data_config=cfg) for i in range(d.validation_count)]
        sheet = contact_sheet(scores)
        with atomic.atomic_path(self.run_dir / f"val_{self.step:06d}.png") as tmp:
            sheet.save(tmp)
        return {"val_iou": float(np.mean([s.iou for s in scores])),
                "val_chamfer": float(np.mean([s.chamfer for s in scores])),
                "val_psnr": float(np.mean([s.psnr for s in scores]))}

    # -- the run ------------------------------------------------------------------------------------
    def run(self, *, resume: bool = False, overwrite: bool = False) -> dict:
        cfg = self.cfg
        if self.checkpoint_path.is_file() and not (resume or overwrite):
            raise InputError(f"{self.run_dir} already holds a training checkpoint",
                             fix="pass --resume to continue it, --overwrite to start over, or set output.dir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.is_file():
            self.resume()
            self.log(f"resumed from {self.checkpoint_path} at step {self.step}")
        self.load_data()
        total = cfg.total_steps
        budget = cfg.train.time_budget_minutes * 60 if cfg.train.time_budget_minutes else None
        self.log(f"training {model_summary(self.model)} on {self.pool_size} objects, device {self.device}, "
                 f"{total} steps" + (f" or {cfg.train.time_budget_minutes:g} min" if budget else ""))
        start = time.time() - self.elapsed
        window, window_t = [], time.time()
        try:
            while True:
                self.elapsed = time.time() - start
                frac = progress_fraction(self.step, total, self.elapsed, budget)
                if frac >= 1.0:
                    break
                stage_idx, stage = stage_at(cfg.stages, frac)
                lr = learning_rate(cfg.train.lr, self.step, cfg.train.warmup_steps, frac, cfg.train.min_lr_ratio)
                info = self.train_step(stage, lr)
                if not math.isfinite(info["loss"]):
                    raise InputError(f"the loss became {info['loss']} at step {self.step}",
                                     fix="lower train.lr or raise train.warmup_steps, then --resume or --overwrite")
                window.append(info)
                if self.step % cfg.output.log_every == 0 or self.step == 1:
                    now = time.time()
                    rate = (now - window_t) / len(window)
                    frac = progress_fraction(self.step, total, now - start, budget)
                    eta = (now - start) * (1 - frac) / max(frac, 1e-9)
                    keys = [k for k in window[-1] if all(k in w for w in window)]  # stages differ in losses
                    mean = {k: float(np.mean([w[k] for w in window])) for k in keys}
                    msg = (f"stage {stage_idx + 1}/{len(cfg.stages)} {stage.render_size}px loss {mean['loss']:.4f} "
                           + " ".join(f"{k} {mean[k]:.4f}" for k in ("rgb", "mask", "occupancy", "surface_rgb",
                                                                      "perceptual") if k in mean)
                           + f" lr {lr:.2e} {rate:.2f}s/step eta {_fmt(eta)}")
                    self.log(f"step {self.step}/{total} {msg}")
                    self.progress("train", self.step, total, msg)
                    self.history.append({"step": self.step, "minutes": round((now - start) / 60, 2), **mean})
                    window, window_t = [], now
                if cfg.output.validate_every and self.step % cfg.output.validate_every == 0:
                    self._validate_and_log(start)
                if cfg.output.checkpoint_every and self.step % cfg.output.checkpoint_every == 0:
                    self.elapsed = time.time() - start
                    self.save()
        except (KeyboardInterrupt, JobCancelled):
            # Keep what was learned: the next run continues from here with --resume.
            self.elapsed = time.time() - start
            self.save()
            self.log(f"stopped at step {self.step}; checkpoint saved, --resume continues")
            raise
        self.elapsed = time.time() - start
        validated = self.history and self.history[-1].get("step") == self.step and "val_iou" in self.history[-1]
        final = {k: v for k, v in self.history[-1].items() if k.startswith("val_")} if validated else \
            self._validate_and_log(start)
        self.save()
        summary = {"steps": self.step, "minutes": round(self.elapsed / 60, 2), "device": self.device,
                   "objects": self.pool_size, "seeds": [self.cfg.data.seed, self.cfg.data.seed + self.cfg.data.count
                                                        + self.grown_objects(self.step) - 1]
                   if self.cfg.data.kind == "procedural" else None, **model_summary(self.model), **final}
        if cfg.output.export:
            summary.update(self.export(cfg.output.export))
        atomic.write_json(self.run_dir / "summary.json", summary)
        return summary

    def _validate_and_log(self, start: float) -> dict:
        metrics = self.validate()
        if metrics:
            entry = {"step": self.step, "minutes": round((time.time() - start) / 60, 2), **metrics}
            self.history.append(entry)
            self.log(f"validation at step {self.step}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            atomic.write_json(self.run_dir / "history.json", self.history)
        return metrics

    # -- export ---------------------------------------------------------------------------------------
    def export(self, folder: str | Path) -> dict:
        """Save the EMA model (config.json + model.safetensors); optionally calibrate its mesh threshold."""
        model = self.ema.shadow.float().cpu().eval()
        out = {"export": str(folder)}
        if self.cfg.output.calibrate_threshold and self.cfg.data.kind == "procedural":
            threshold, iou = calibrate_threshold(model, self.cfg)
            model.config = replace(model.config, mesh_threshold=threshold)
            out.update(mesh_threshold=threshold, calibration_iou=iou)
        model.save_pretrained(folder)
        for name in ("config.json", "model.safetensors"):  # temp files are 0600; shipped weights are world-readable
            (Path(folder) / name).chmod(0o644)
        self.log(f"exported the EMA model to {folder}")
        return out


@torch.no_grad()
def calibrate_threshold(model, cfg: TrainConfig, count: int = 8, grid: int = 48) -> tuple[float, float]:
    """The density threshold (from a log-spaced set) with the best mean IoU on ``count`` validation objects.

    Validation seeds are never trained on (training objects are partly memorised, which biases the
    threshold) and lie below the benchmark's held-out seeds.
    """
    from orbitmesh.data.procedural import make_sample
    from orbitmesh.data.sdf import grid_points
    from orbitmesh.training.evaluate import predicted_density, reconstruct, volumetric_iou

    candidates = [float(x) for x in np.geomspace(1.0, 60.0, 16)]
    pcfg = replace(procedural_config(cfg, model.config.input_size), views=0, include_input_view=False)
    pts = grid_points(grid)
    ious = np.zeros(len(candidates))
    for i in range(count):
        s = make_sample(cfg.data.validation_seed + i, pcfg)
        planes = reconstruct(model, s)
        dens = predicted_density(model, planes, pts)
        truth = s.shape.occupancy(pts)
        ious += [volumetric_iou(dens > t, truth) for t in candidates]
    best = int(np.argmax(ious))
    return round(candidates[best], 3), float(ious[best] / count)


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

