"""Triplane refinement: silhouette IoU against 21 orbit views before/after refining a degraded triplane.

A held-out procedural object is rendered (sphere-traced, RGB + mask) from the 21 SV3D orbit
cameras. A triplane (planes + the VFusion3D decoder MLP layout, small sizes) is fitted to a
*degraded* version of the object (its SDF warped by low-frequency noise and dilated, colours
blurred): the stand-in for an LRM's guess. Refinement then optimises the planes and the
decoder MLP (``--freeze-decoder``: the planes only) against the 21 views with
:func:`orbitmesh.quality.refine.refine_triplane`. The silhouette IoU is the mean over views of
IoU(rendered opacity > 0.5, mask > 0.5), before and after.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np


def degraded(shape, amount: float = 0.06, dilate: float = 0.03):
    """SDF and colour functions of a worse version of ``shape``: warped, dilated, colours blurred."""
    import torch

    rng = np.random.default_rng(3)
    freq = torch.tensor(rng.normal(scale=2.5, size=(4, 3)), dtype=torch.float32)
    phase = torch.tensor(rng.uniform(0, 2 * np.pi, size=(4, 3)), dtype=torch.float32)

    def warp(p: torch.Tensor) -> torch.Tensor:
        return p + amount * torch.stack([torch.sin(p @ freq[k] + phase[k, 0]) for k in range(3)], -1)

    def sdf(p: torch.Tensor) -> torch.Tensor:
        return shape.sdf(warp(p)) - dilate

    offsets = torch.tensor(rng.normal(scale=0.05, size=(8, 3)), dtype=torch.float32)

    def color(p: torch.Tensor) -> torch.Tensor:
        return torch.stack([shape.albedo(warp(p) + o) for o in offsets]).mean(0)

    return sdf, color


def fit_triplane(sdf, color, *, channels: int, plane_size: int, steps: int, device: str, seed: int = 0,
                 points: int = 12288):
    """Fit planes + decoder to an occupancy/colour field (BCE on the raw density logit, MSE on colour
    near the surface). Returns (TriplaneField, planes (1, 3, C, R, R))."""
    import torch
    import torch.nn.functional as F

    from orbitmesh.models.lrm.triplane import TriplaneDecoder
    from orbitmesh.quality.refine import TriplaneField

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    field = TriplaneField(TriplaneDecoder(channels)).to(device)
    planes = (0.1 * torch.randn(1, 3, channels, plane_size, plane_size, generator=g)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([{"params": [planes], "lr": 0.02}, {"params": field.parameters(), "lr": 2e-3}])
    for _ in range(steps):
        uni = torch.rand(points // 3, 3, generator=g) * 2 - 1
        near = torch.rand(points - points // 3, 3, generator=g) * 1.4 - 0.7
        pts = torch.cat([uni, near])
        with torch.no_grad():
            d = sdf(pts)
            occ = (d < 0).float()
            col = color(pts)
        out = field.query_raw(planes, pts[None].to(device))
        raw, rgb = out["sigma"][0, :, 0], out["rgb"][0]
        surf = (d.abs() < 0.1).to(device)
        loss = F.binary_cross_entropy_with_logits(raw * 0.25, occ.to(device))
        loss = loss + (((rgb - col.to(device)) ** 2).sum(-1) * surf).sum() / surf.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return field, planes.detach()


def render_orbit(shape, size: int):
    """21 SV3D-orbit views of ``shape`` (sphere-traced): images, masks, cameras."""
    import torch

    from orbitmesh.data.render import render_view
    from orbitmesh.pipeline.orbit import orbit_azimuths_deg
    from orbitmesh.quality.cameras import OrbitAlignment

    align = OrbitAlignment()
    images, masks, cams = [], [], []
    for az in orbit_azimuths_deg(21):
        cam = align.camera(float(az), 10.0)
        view = render_view(shape, torch.from_numpy(cam.c2w), size, cam.intrinsics, supersample=2)
        images.append(view.rgb.numpy())
        masks.append(view.alpha.numpy())
        cams.append(cam)
    return images, masks, cams


def run(*, seed: int = 1_000_004, view_size: int = 64, steps: int = 250, rays: int = 1024, samples: int = 16,
        channels: int = 16, plane_size: int = 64, fit_steps: int = 150, freeze_decoder: bool = False,
        device: str = "cpu") -> dict:
    """Refine a degraded triplane of procedural object ``seed`` (held-out seeds >= 1e6) against its 21 orbit
    views of ``view_size`` pixels: ``steps`` steps of ``rays`` rays with ``samples`` stratified (= importance)
    samples each; the triplane has ``channels`` x ``plane_size``^2 planes, fitted to the degraded object in
    ``fit_steps`` steps; ``freeze_decoder``: optimise the planes only (default: planes + decoder MLP, lr 1e-3).
    """
    import torch

    from orbitmesh.data.procedural import make_shape
    from orbitmesh.quality.refine import RefineConfig, make_targets, refine_triplane, render_views, silhouette_iou

    t_all = time.perf_counter()
    torch.manual_seed(0)
    shape = make_shape(seed)
    t0 = time.perf_counter()
    images, masks, cams = render_orbit(shape, view_size)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sdf, color = degraded(shape)
    field, planes = fit_triplane(sdf, color, channels=channels, plane_size=plane_size,
                                 steps=fit_steps, device=device)
    fit_s = time.perf_counter() - t0
    targets = make_targets(images, masks, cams, view_size, device=device)
    eval_samples = max(32, samples)  # measure with more samples than the training rays use
    rgb0, op0 = render_views(field, planes, targets, eval_samples)
    iou0 = silhouette_iou(op0, targets.mask)
    cfg = RefineConfig(steps=steps, rays_per_step=rays, samples=samples, image_size=view_size,
                       train_decoder=not freeze_decoder, decoder_lr=1e-3)
    res = refine_triplane(field, planes, targets, cfg)
    rgb1, op1 = render_views(field, res.planes, targets, eval_samples)
    iou1 = silhouette_iou(op1, targets.mask)
    tgt = targets.rgb.reshape(rgb1.shape)
    return {"bench": "refinement", "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "device": str(device),
            "views": targets.views, "view_size": view_size, "steps": steps, "rays_per_step": rays,
            "samples_per_ray": 2 * samples, "planes": list(planes.shape), "decoder_trained": cfg.train_decoder,
            "silhouette_iou_before": round(iou0, 4), "silhouette_iou_after": round(iou1, 4),
            "rgb_mae_before": round(float((rgb0 - tgt).abs().mean()), 4),
            "rgb_mae_after": round(float((rgb1 - tgt).abs().mean()), 4),
            "seconds": round(res.seconds, 3), "seconds_per_step": round(res.seconds / max(steps, 1), 4),
            "seconds_render_views": round(render_s, 3), "seconds_fit_degraded": round(fit_s, 3),
            "seconds_total": round(time.perf_counter() - t_all, 3)}


def format_table(result: dict) -> str:
    return "\n".join([
        f"refinement ({result['machine']}, device {result['device']}): {result['views']} views at "
        f"{result['view_size']}px, planes {result['planes']}, {result['steps']} steps x {result['rays_per_step']} rays "
        f"x {result['samples_per_ray']} samples",
        f"  silhouette IoU   before {result['silhouette_iou_before']:.4f}   after {result['silhouette_iou_after']:.4f}"
        "   (bar: after >= 0.95)",
        f"  RGB mean abs err before {result['rgb_mae_before']:.4f}   after {result['rgb_mae_after']:.4f}",
        f"  refinement seconds {result['seconds']:.2f} ({result['seconds_per_step'] * 1000:.1f} ms/step)",
        f"  (rendering views {result['seconds_render_views']:.2f} s, fitting the degraded triplane "
        f"{result['seconds_fit_degraded']:.2f} s, total {result['seconds_total']:.2f} s)"])
