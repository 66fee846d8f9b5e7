"""Triplane refinement against posed frames (V3D / VFusion3D style).

The triplane the LRM predicted (``planes`` (1, 3, C, H, W)) is optimised with Adam so the
LRM's own volume renderer reproduces the frames: per step a random batch of rays from all
views is rendered (stratified + importance samples, MipNeRF marching, white background) and
the loss is ``rgb_weight * MSE(rgb) + mask_weight * MSE(opacity, mask)`` plus a small total
variation on the planes. The decoder MLP is frozen by default (``train_decoder`` unfreezes
it and updates it in place). Progress is reported after every step and may cancel. Works on CPU at small sizes; the
rays per step, samples per ray and frame size set the cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from orbitmesh.errors import InputError
from orbitmesh.models.lrm.renderer import RenderOptions, camera_rays, render_rays
from orbitmesh.models.lrm.triplane import sample_from_planes
from orbitmesh.progress import ProgressCallback, null_progress
from orbitmesh.quality.cameras import Camera

STAGE = "refine"


class TriplaneField(torch.nn.Module):
    """planes + a decoder -> raw fields: ``query_raw(planes, points (N, P, 3))`` ->
    {'rgb': (N, P, 3), 'sigma': (N, P, 1) raw}, the interface :class:`orbitmesh.models.lrm.LRM` has,
    and ``render(planes, origins, dirs, samples, ...)`` with the LRM's renderer (stratified +
    importance samples). ``decoder`` is a :class:`orbitmesh.models.lrm.triplane.TriplaneDecoder`;
    it is this module's only parameter set (frozen or trained by :func:`refine_triplane`)."""

    def __init__(self, decoder: torch.nn.Module, box_warp: float = 2.0, bbox: tuple[float, float] = (-1.0, 1.0)):
        super().__init__()
        self.decoder, self.box_warp, self.bbox = decoder, float(box_warp), bbox

    @classmethod
    def from_lrm(cls, model) -> "TriplaneField":
        """The field of a loaded reconstruction model: VFusion3D-family LRMs or TripoSR."""
        if hasattr(model, "render_rays"):
            return TripoSRField(model)
        c = model.config
        return cls(model.synthesizer.decoder, c.box_warp, (c.bbox_min, c.bbox_max))

    def query_raw(self, planes: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decoder(sample_from_planes(planes, points.to(planes.device), self.box_warp))

    def render(self, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, samples: int, *,
               deterministic: bool = True, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, 3) rays -> rgb (R, 3) on white, opacity (R,)."""
        lo, hi = self.bbox
        opts = RenderOptions(samples, samples, self.box_warp, lo, hi)
        rgb, _, w = render_rays(lambda p: self.query_raw(planes, p), origins[None], dirs[None], opts,
                                deterministic, generator)
        return rgb[0], w[0, :, 0]


class TripoSRField(TriplaneField):
    """TripoSR's field and renderer (uniform samples, ``exp`` density) behind the same interface; its
    NeRF decoder is the parameter set."""

    def __init__(self, model) -> None:
        c = model.config
        super().__init__(model.decoder, c.box_warp, (c.bbox_min, c.bbox_max))
        self._model = (model,)  # not a submodule: only the decoder is this field's parameters

    def query_raw(self, planes: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._model[0].query_raw(planes, points)

    def render(self, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, samples: int, *,
               deterministic: bool = True, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        # TripoSR samples bin midpoints: deterministic whatever is asked; 2x samples ~ the LRM's stratified +
        # importance count
        out = self._model[0].render_rays(planes, origins[None], dirs[None], num_samples=2 * samples)
        return out["rgb"][0], out["opacity"][0]


@dataclass
class RefineConfig:
    steps: int = 200
    lr: float = 0.05
    decoder_lr: float = 1e-4
    train_decoder: bool = False
    rays_per_step: int = 4096
    samples: int = 32  # stratified samples per ray; as many importance samples again
    image_size: int = 128  # frames are resampled to this size for ray targets
    rgb_weight: float = 1.0
    mask_weight: float = 1.0
    mask_loss: str = "bce"  # "bce" on the opacity (strong gradients where it saturates) or "mse"
    tv_weight: float = 1e-4
    foreground_fraction: float = 0.5  # share of rays drawn inside the (dilated) masks
    # The planes are optimised as base + sum of upsampled offsets at these downsampling factors:
    # coarse offsets move large regions per step, so low-frequency shape errors converge fast.
    pyramid: tuple[int, ...] = (1, 4, 8)
    seed: int = 0

    def validate(self) -> "RefineConfig":
        for name, lo, hi in (("steps", 0, 100_000), ("rays_per_step", 16, 1 << 20), ("samples", 2, 1024),
                             ("image_size", 8, 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InputError(f"refine {name} must be a whole number in [{lo}, {hi}], got {value!r}",
                                 fix=f"set {name} inside that range")
        if self.mask_loss not in ("bce", "mse"):
            raise InputError(f"refine mask_loss must be 'bce' or 'mse', got {self.mask_loss!r}", fix="use 'bce'")
        for name in ("lr", "decoder_lr", "rgb_weight", "mask_weight", "tv_weight", "foreground_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"refine {name} must be a finite number >= 0, got {value!r}", fix=f"fix {name}")
        return self


@dataclass
class Targets:
    """Ray targets from V views at one size S: ``origins``/``dirs`` (V*S*S, 3), ``rgb`` (V*S*S, 3),
    ``mask`` (V*S*S,), ``size`` S and ``views`` V."""

    origins: torch.Tensor
    dirs: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor
    size: int
    views: int


@dataclass
class RefineResult:
    planes: torch.Tensor
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)


def _resize(x: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, C) float -> (size, size, C) float32, area-averaged (or bilinear when upsampling)."""
    t = torch.as_tensor(np.asarray(x, np.float32))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    if t.shape[-1] != size:
        mode = "area" if t.shape[-1] > size else "bilinear"
        t = F.interpolate(t, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return t[0].permute(1, 2, 0)


def make_targets(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], cameras: Sequence[Camera],
                 size: int, device: str | torch.device = "cpu") -> Targets:
    """Resample frames (H, W, 3) in [0, 1] on white and masks (H, W) to ``size`` and build their rays."""
    if not (len(images) == len(masks) == len(cameras)) or not images:
        raise InputError(f"refinement needs matching frames, masks and cameras (got {len(images)}, {len(masks)}, "
                         f"{len(cameras)})", fix="pass one mask and one camera per frame")
    cams = torch.stack([c.render_camera() for c in cameras]).to(device)
    origins, dirs = camera_rays(cams[:, :16].reshape(-1, 4, 4), cams[:, 16:].reshape(-1, 3, 3), size)
    rgb = torch.stack([_resize(im, size) for im in images]).to(device).reshape(-1, 3)
    mask = torch.stack([_resize(m, size)[..., 0] for m in masks]).to(device).reshape(-1)
    return Targets(origins.reshape(-1, 3), dirs.reshape(-1, 3), rgb.clamp(0, 1), mask.clamp(0, 1), size, len(images))


def render_rays_batched(field: TriplaneField, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                        samples: int, *, deterministic: bool = True, generator: torch.Generator | None = None,
                        chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, 3) rays -> rgb (R, 3), opacity (R,), in chunks (keeps gradients when enabled)."""
    rgbs, ops = [], []
    for s in range(0, len(origins), chunk):
        rgb, op = field.render(planes, origins[s:s + chunk], dirs[s:s + chunk], samples,
                               deterministic=deterministic, generator=generator)
        rgbs.append(rgb)
        ops.append(op)
    return torch.cat(rgbs), torch.cat(ops)


def render_views(field: TriplaneField, planes: torch.Tensor, targets: Targets, samples: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every target ray, deterministic, no grad -> rgb (V, S, S, 3), opacity (V, S, S)."""
    with torch.no_grad():
        rgb, op = render_rays_batched(field, planes, targets.origins, targets.dirs, samples)
    s = targets.size
    return rgb.reshape(targets.views, s, s, 3), op.reshape(targets.views, s, s)


def silhouette_iou(opacity: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> float:
    """Mean over views of IoU(opacity > t, mask > t); opacity/mask (V, S, S)."""
    a, b = opacity > threshold, mask.reshape(opacity.shape) > threshold
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float().clamp(min=1)
    return float((inter / union).mean())


def _tv(planes: torch.Tensor) -> torch.Tensor:
    return ((planes[..., 1:, :] - planes[..., :-1, :]) ** 2).mean() + ((planes[..., 1:] - planes[..., :-1]) ** 2).mean()


def _ray_sampler(targets: Targets, config: RefineConfig, gen: torch.Generator) -> Callable[[], torch.Tensor]:
    """Indices of a ray batch: ``foreground_fraction`` from pixels near the masks, the rest uniform."""
    s, v = targets.size, targets.views
    m = (targets.mask.reshape(v, 1, s, s) > 0.05).float()
    near = F.max_pool2d(m, 9, stride=1, padding=4).reshape(-1) > 0  # masks grown by 4 pixels
    near_idx = torch.nonzero(near).squeeze(1)
    n_fg = int(config.rays_per_step * config.foreground_fraction) if len(near_idx) else 0
    total = len(targets.mask)

    def draw() -> torch.Tensor:
        uni = torch.randint(0, total, (config.rays_per_step - n_fg,), generator=gen)
        if not n_fg:
            return uni.to(targets.mask.device)
        fg = near_idx[torch.randint(0, len(near_idx), (n_fg,), generator=gen).to(near_idx.device)]
        return torch.cat([fg, uni.to(fg.device)])

    return draw


def refine_triplane(field: TriplaneField, planes: torch.Tensor, targets: Targets, config: RefineConfig | None = None,
                    progress: ProgressCallback = null_progress) -> RefineResult:
    """Optimise a copy of ``planes`` (1, 3, C, H, W) against ``targets``; returns the refined planes
    (detached). ``progress('refine', step, steps, message)`` after every step (may raise JobCancelled)."""
    config = (config or RefineConfig()).validate()
    if planes.ndim != 5 or planes.shape[0] != 1 or planes.shape[1] != 3:
        raise InputError(f"planes must be (1, 3, C, H, W), got {tuple(planes.shape)}", fix="pass the LRM's planes")
    t0 = time.perf_counter()
    base = planes.detach().clone().float()
    n, k, c, h, w = base.shape
    deltas = [torch.zeros((k, c, max(1, h // f), max(1, w // f)), device=base.device, requires_grad=True)
              for f in sorted(set(int(x) for x in config.pyramid if int(x) >= 1))]

    def current() -> torch.Tensor:
        out = base[0]
        for d in deltas:
            out = out + (d if d.shape[-1] == w and d.shape[-2] == h else
                         F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False))
        return out[None]

    params = [{"params": deltas, "lr": config.lr}]
    decoder_state = {n: q.requires_grad for n, q in field.named_parameters()}
    for q in field.parameters():
        q.requires_grad_(config.train_decoder)
    if config.train_decoder:
        params.append({"params": list(field.parameters()), "lr": config.decoder_lr})
    opt = torch.optim.Adam(params)
    gen = torch.Generator().manual_seed(config.seed)
    draw = _ray_sampler(targets, config, gen)
    losses: list[float] = []
    try:
        for step in range(1, config.steps + 1):
            idx = draw()
            p = current()
            rgb, op = render_rays_batched(field, p, targets.origins[idx], targets.dirs[idx], config.samples,
                                          deterministic=False, generator=None, chunk=config.rays_per_step)
            m = targets.mask[idx]
            mask_term = (F.binary_cross_entropy(op.clamp(1e-4, 1 - 1e-4), m) if config.mask_loss == "bce"
                         else F.mse_loss(op, m))
            loss = config.rgb_weight * F.mse_loss(rgb, targets.rgb[idx]) + config.mask_weight * mask_term
            if config.tv_weight:
                loss = loss + config.tv_weight * _tv(p)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            progress(STAGE, step, config.steps, f"step {step}/{config.steps} loss {losses[-1]:.4f}")
    finally:
        for n, q in field.named_parameters():
            q.requires_grad_(decoder_state[n])
    with torch.no_grad():
        refined = current()
    return RefineResult(planes=refined, losses=losses, seconds=time.perf_counter() - t0, config=asdict(config))
