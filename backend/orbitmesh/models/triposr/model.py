"""TripoSR (Tripo AI / Stability AI, MIT): image -> triplane -> density/colour queries and volume renders.

Submodule names follow the reference ``TSR`` (image_tokenizer.model, tokenizer, backbone,
post_processor, decoder), so a released ``model.ckpt`` maps onto ours by key
(:mod:`orbitmesh.models.triposr.loading` renames the ViT keys between transformers 4 and 5).

The interface is the VFusion3D :class:`orbitmesh.models.lrm.LRM`'s where the pipeline needs it
(``forward``, ``query_raw``, ``query_points``, ``query_grid``, ``grid_tables``, ``config.input_size``
/ ``bbox_min`` / ``bbox_max`` / ``mesh_threshold`` / ``transformer_layers``), with these differences:
the world box is [-radius, radius]^3 (0.87), the raw density activates as
``exp(raw + density_bias)`` (:meth:`TripoSR.activate_density`, threshold 25 on that), colours are a
plain sigmoid, there is no input camera (the input view is the one seen from +x, z up, image
right = +y: the reference's azimuth-0 camera) and renders take rays (:meth:`TripoSR.render_rays`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from orbitmesh.errors import ModelError
from orbitmesh.models.lrm.grid import GridTables
from orbitmesh.models.triposr.activations import get_activation
from orbitmesh.models.triposr.backbone import Transformer1D
from orbitmesh.models.triposr.config import SOURCE_DISTANCE, SOURCE_FOVY_DEG, TripoSRConfig
from orbitmesh.models.triposr.encoder import ImageTokenizer, resolve_vit_config
from orbitmesh.models.triposr.renderer import render_rays, spherical_rays
from orbitmesh.models.triposr.triplane import (
    PLANE_AXES,
    NeRFMLP,
    Triplane1DTokenizer,
    TriplaneUpsampleNetwork,
    sample_planes,
)

DEFAULT_CHUNK = 2 ** 18  # points per query chunk
RAY_CHUNK = 2 ** 13  # rays per render chunk (x num_samples points)


class TripoSR(nn.Module):
    """TripoSR triplane reconstruction model.

    ``forward(image)``: image (N, 3, H, W) RGB in [0, 1] (composited on grey) -> planes (N, 3, C, 2h, 2h)
    (the reference's ``scene_codes``). ``vit_config`` overrides the image tokenizer's ViT config; else it is
    resolved from the config (built-in name, ``vit_config``, or a folder relative to ``base_dir``).
    """

    def __init__(self, config: TripoSRConfig, *, vit_config: Mapping[str, Any] | None = None,
                 base_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.config = config
        self.vit_config = dict(vit_config) if vit_config is not None else resolve_vit_config(config.image_tokenizer,
                                                                                             base_dir)
        self.image_tokenizer = ImageTokenizer(config.image_tokenizer, self.vit_config)
        _check_widths(config, self.image_tokenizer.hidden_size)
        self.tokenizer = Triplane1DTokenizer(config.tokenizer)
        self.backbone = Transformer1D(config.backbone)
        self.post_processor = TriplaneUpsampleNetwork(config.post_processor)
        self.decoder = NeRFMLP(config.decoder, config.renderer.feature_reduction)
        r = config.renderer
        self._density_act = get_activation(r.density_activation, "renderer.density_activation")
        self._color_act = get_activation(r.color_activation, "renderer.color_activation")

    @property
    def device(self) -> torch.device:
        return self.tokenizer.embeddings.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tokenizer.embeddings.dtype

    # -- image -> planes -------------------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """image (N, 3, H, W) in [0, 1] -> image tokens (N, 1 + patches, D); resized (bilinear, antialiased,
        as the reference) when not ``cond_image_size``."""
        size = self.config.cond_image_size
        image = image.to(self.device, torch.float32)
        if image.shape[-2:] != (size, size):
            image = F.interpolate(image, (size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.image_tokenizer(image)

    def forward(self, image: torch.Tensor, progress: Callable[[str, int, int], None] | None = None) -> torch.Tensor:
        """image (N, 3, H, W) in [0, 1] -> planes (N, 3, C, H', W').

        ``progress(part, step, total)`` is called after the encoder and after each backbone block.
        """
        context = self.encode_image(image)
        if progress is not None:
            progress("encoder", 1, 1)
        tokens = self.tokenizer(image.shape[0]).to(context.dtype)
        block_progress = None if progress is None else (lambda i, n: progress("transformer", i, n))
        tokens = self.backbone(tokens, context, progress=block_progress)
        return self.post_processor(self.tokenizer.detokenize(tokens))

    # -- planes -> fields ----------------------------------------------------------------------------------
    def activate_density(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw decoder density -> the density the renderer and the mesh threshold use: exp(raw + density_bias)."""
        return self._density_act(raw + self.config.renderer.density_bias)

    def query_raw(self, planes: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """planes (N, 3, C, H, W), world points (N, P, 3) -> {'rgb': (N, P, 3) activated colour,
        'sigma': (N, P, 1) raw density (see :meth:`activate_density`)}, float32."""
        r = self.config.renderer
        feats = sample_planes(planes.float(), points.to(planes.device).float(), r.radius, r.feature_reduction)
        raw = self.decoder(feats.to(self.decoder.layers[0].weight.dtype)).float()
        return {"rgb": self._color_act(raw[..., 1:4]), "sigma": raw[..., 0:1]}

    def query_points(self, planes: torch.Tensor, points: torch.Tensor, chunk_size: int = DEFAULT_CHUNK
                     ) -> dict[str, torch.Tensor]:
        """points (N, P, 3) -> {'rgb': (N, P, 3), 'sigma': (N, P, 1) activated density}, in chunks of points."""
        outs = []
        for i in range(0, max(1, points.shape[1]), chunk_size):
            out = self.query_raw(planes, points[:, i:i + chunk_size])
            outs.append({"rgb": out["rgb"], "sigma": self.activate_density(out["sigma"])})
        return {k: torch.cat([o[k] for o in outs], dim=1) for k in ("rgb", "sigma")}

    def grid_points(self, resolution: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(R^3, 3) world points of the reference's marching-cubes grid over [-radius, radius]^3 (indexing 'ij')."""
        r = self.config.renderer.radius
        axis = torch.linspace(0, 1, resolution, device=device or self.device)
        axis = (axis - 0) / (1 - 0) * (r - (-r)) + (-r)  # the reference's scale_tensor, for identical rounding
        grid = torch.meshgrid(axis, axis, axis, indexing="ij")
        return torch.stack([g.reshape(-1) for g in grid], dim=-1)

    def query_grid(self, planes: torch.Tensor, resolution: int, chunk_size: int = DEFAULT_CHUNK
                   ) -> dict[str, torch.Tensor]:
        """A resolution^3 grid over [-radius, radius]^3 (indexing 'ij', x slowest) -> {'rgb': (N, R, R, R, 3),
        'sigma': (N, R, R, R, 1) activated}, by the reference's per-point query. Holds the whole grid."""
        pts = self.grid_points(resolution, planes.device)
        out = self.query_points(planes, pts[None].expand(planes.shape[0], -1, -1), chunk_size)
        shape = (planes.shape[0], resolution, resolution, resolution)
        return {"rgb": out["rgb"].reshape(*shape, 3), "sigma": out["sigma"].reshape(*shape, 1)}

    def grid_tables(self, planes: torch.Tensor, axes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                    chunk_size: int = DEFAULT_CHUNK) -> GridTables:
        """Fast queries of one triplane (1, 3, C, H, W) on the grid ``axes[0] x axes[1] x axes[2]`` (world units);
        ``.density(i, j, k)`` is the activated density."""
        return GridTables(self.decoder, planes, axes, self.config.box_warp, chunk_size, plane_axes=PLANE_AXES,
                          density_activation=self.activate_density)

    # -- rendering ---------------------------------------------------------------------------------------------
    def render_rays(self, planes: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor, *,
                    num_samples: int | None = None, chunk_size: int = RAY_CHUNK) -> dict[str, torch.Tensor]:
        """planes (N, 3, C, H, W), rays (N, ..., 3) world -> {'rgb': (N, ..., 3) on white, 'opacity': (N, ...),
        'depth': (N, ...)}. Differentiable in ``planes`` (and the decoder) when grad is enabled."""
        n, shape = rays_o.shape[0], rays_o.shape[1:-1]
        o = rays_o.reshape(n, -1, 3).to(planes.device).float()
        d = rays_d.reshape(n, -1, 3).to(planes.device).float()
        samples = num_samples or self.config.renderer.num_samples_per_ray

        def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.query_raw(planes, points)
            return self.activate_density(out["sigma"]), out["rgb"]

        parts = [render_rays(field, o[:, s:s + chunk_size], d[:, s:s + chunk_size], self.config.renderer.radius,
                             samples) for s in range(0, o.shape[1], chunk_size)]
        out = {k: torch.cat([p[k] for p in parts], dim=1) for k in parts[0]}
        return {"rgb": out["rgb"].reshape(n, *shape, 3), "opacity": out["opacity"].reshape(n, *shape),
                "depth": out["depth"].reshape(n, *shape)}

    def render(self, planes: torch.Tensor, n_views: int, *, elevation_deg: float = 0.0,
               camera_distance: float = SOURCE_DISTANCE, fovy_deg: float = SOURCE_FOVY_DEG,
               size: int = 256) -> torch.Tensor:
        """The reference's orbit renders: (N, V, size, size, 3) RGB on white (azimuth 0 = the input view)."""
        rays_o, rays_d = spherical_rays(n_views, elevation_deg, camera_distance, fovy_deg, size, size)
        n = planes.shape[0]
        out = self.render_rays(planes, rays_o[None].expand(n, *rays_o.shape), rays_d[None].expand(n, *rays_d.shape))
        return out["rgb"]

    # -- checkpoints -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike = "stabilityai/TripoSR", *,
                        local_files_only: bool = False, cache_dir: str | os.PathLike | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        progress: Callable[[str], None] | None = None) -> "TripoSR":
        """Load from the hub id, a released-layout folder or our own folder (see :mod:`.loading`)."""
        from orbitmesh.models.triposr.loading import from_pretrained

        return from_pretrained(path_or_repo_id, local_files_only=local_files_only, cache_dir=cache_dir, device=device,
                               dtype=dtype, progress=progress)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` into ``folder``, atomically."""
        from orbitmesh.models.triposr.loading import save_pretrained

        save_pretrained(self, folder)


def _check_widths(config: TripoSRConfig, image_dim: int) -> None:
    """The widths the image tokens meet in the backbone (the reference would fail inside a matmul)."""
    b = config.backbone
    if b.cross_attention_dim is not None and b.cross_attention_dim != image_dim and not b.double_self_attention:
        raise ModelError(f"backbone.cross_attention_dim {b.cross_attention_dim} differs from the image tokenizer's "
                         f"hidden_size {image_dim}", fix="make them equal (released: 768, the DINO ViT-B width)")
    if b.double_self_attention and image_dim != b.inner_dim:
        raise ModelError(f"backbone.double_self_attention needs the image tokens ({image_dim}) as wide as the "
                         f"blocks ({b.inner_dim})", fix="fix the backbone config")
