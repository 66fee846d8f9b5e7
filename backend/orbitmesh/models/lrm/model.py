"""The VFusion3D LRM: image -> triplane -> density/colour queries and volume renders.

Submodule names follow the reference ``LRMGenerator`` (encoder.model, camera_embedder,
transformer, synthesizer.decoder) so a reference state dict maps onto ours by key
(:mod:`orbitmesh.models.lrm.loading` also renames transformers-4 Dinov2 keys).
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from orbitmesh.models.lrm.camera import source_camera
from orbitmesh.models.lrm.config import LRMConfig
from orbitmesh.models.lrm.encoder import DinoEncoder
from orbitmesh.models.lrm.grid import GridTables, query_grid_tables
from orbitmesh.models.lrm.lifting import PlaneRefiner, TokenLifting
from orbitmesh.models.lrm.renderer import RenderOptions, camera_rays, render_rays
from orbitmesh.models.lrm.transformer import CameraEmbedder, TriplaneTransformer
from orbitmesh.models.lrm.triplane import TriplaneDecoder, activate_density, sample_from_planes

DEFAULT_CHUNK = 2 ** 18  # points per grid-query chunk: ~250 MB of plane features at C=80


class TriplaneSynthesizer(nn.Module):
    """Holds the triplane decoder (``synthesizer.decoder`` in the reference)."""

    def __init__(self, config: LRMConfig) -> None:
        super().__init__()
        self.decoder = TriplaneDecoder(config.triplane_dim, config.decoder_hidden_dim, config.decoder_layers)


class LRM(nn.Module):
    """VFusion3D large reconstruction model.

    ``forward(image, camera)``: image (N, 3, H, W) RGB in [0, 1] on white, camera (N, 16)
    (default: the canonical source camera) -> planes (N, 3, C, 2r, 2r).
    """

    def __init__(self, config: LRMConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = DinoEncoder(config.encoder)
        self.camera_embedder = CameraEmbedder(16, config.camera_embed_dim)
        self.transformer = TriplaneTransformer(
            config.transformer_dim, config.encoder.hidden_size, config.camera_embed_dim, config.triplane_low_res,
            config.triplane_dim, config.transformer_layers, config.transformer_heads, config.transformer_eps,
            config.mlp_ratio)
        self.synthesizer = TriplaneSynthesizer(config)
        self.lifting = None
        if config.lift_samples > 0:
            self.lifting = TokenLifting(config.encoder.hidden_size, config.lift_stem_dim, config.transformer_dim,
                                        config.triplane_low_res, config.lift_samples, config.box_warp,
                                        config.bbox_max, config.lift_stem_blocks)
        self.refiner = None
        if config.refine_dim > 0:
            self.refiner = PlaneRefiner(config.triplane_dim, config.lift_stem_dim + 3, config.refine_dim,
                                        config.triplane_high_res, config.lift_samples, config.box_warp,
                                        config.bbox_max)

    @property
    def device(self) -> torch.device:
        return self.camera_embedder.mlp[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.camera_embedder.mlp[0].weight.dtype

    # -- image -> planes -----------------------------------------------------------------
    def default_source_camera(self, batch: int = 1) -> torch.Tensor:
        return source_camera(self.config.source_camera_distance, self.config.source_focal, batch).to(self.device)

    def forward(self, image: torch.Tensor, camera: torch.Tensor | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> torch.Tensor:
        """image (N, 3, H, W) in [0, 1], camera (N, 16) -> planes (N, 3, C, H', W').

        ``progress(part, step, total)`` is called after the encoder and after each transformer block.
        """
        image = image.to(self.device)
        camera = self.default_source_camera(image.shape[0]) if camera is None else camera.to(self.device)
        feats = self.encoder(image)
        if progress is not None:
            progress("encoder", 1, 1)
        mod = self.camera_embedder(camera.to(feats.dtype))
        maps = tokens = None
        if self.lifting is not None:
            maps = self.lifting.feature_maps(image, feats[:, 1:])
            tokens = self.lifting.lift(maps, camera)
        block_progress = None if progress is None else (lambda i, n: progress("transformer", i, n))
        planes = self.transformer(feats, mod, tokens=tokens, progress=block_progress)
        if self.refiner is not None:  # stem features and RGB only: the patch grid is too coarse to add detail
            planes = self.refiner(planes, maps[1:], camera)
        return planes

    # -- planes -> fields ------------------------------------------------------------------
    @staticmethod
    def activate_density(raw: torch.Tensor) -> torch.Tensor:
        """Raw density -> activated (softplus(raw - 1)), the scale of ``config.mesh_threshold``."""
        return activate_density(raw)

    def query_raw(self, planes: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """planes (N, 3, C, H, W), points (N, P, 3) -> {'rgb': (N, P, 3), 'sigma': (N, P, 1) raw}, float32."""
        feats = sample_from_planes(planes, points.to(planes.device), self.config.box_warp)
        return self.synthesizer.decoder(feats)

    def query_points(self, planes: torch.Tensor, points: torch.Tensor, chunk_size: int = DEFAULT_CHUNK
                     ) -> dict[str, torch.Tensor]:
        """points (N, P, 3) -> {'rgb': (N, P, 3), 'sigma': (N, P, 1) activated density}, in chunks of points."""
        outs = []
        for i in range(0, points.shape[1], chunk_size):
            out = self.query_raw(planes, points[:, i:i + chunk_size])
            outs.append({"rgb": out["rgb"], "sigma": activate_density(out["sigma"])})
        return {k: torch.cat([o[k] for o in outs], dim=1) for k in ("rgb", "sigma")}

    def query_grid(self, planes: torch.Tensor, resolution: int, chunk_size: int = DEFAULT_CHUNK
                   ) -> dict[str, torch.Tensor]:
        """A resolution^3 grid over the bbox (indexing 'ij', x slowest) -> {'rgb': (N, R, R, R, 3),
        'sigma': (N, R, R, R, 1)}. Uses the per-plane factorised decoder (``grid.GridTables``), equal to
        ``query_points`` on the grid points up to float rounding. Holds the whole grid in memory."""
        axis = torch.linspace(self.config.bbox_min, self.config.bbox_max, resolution, device=planes.device)
        return query_grid_tables(self.synthesizer.decoder, planes, axis, self.config.box_warp, chunk_size)

    def grid_tables(self, planes: torch.Tensor, axes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                    chunk_size: int = DEFAULT_CHUNK) -> GridTables:
        """Fast queries of one triplane (1, 3, C, H, W) on the grid ``axes[0] x axes[1] x axes[2]`` (LRM frame)."""
        return GridTables(self.synthesizer.decoder, planes, axes, self.config.box_warp, chunk_size)

    def render(self, planes: torch.Tensor, cameras: torch.Tensor, render_size: int, *,
               deterministic: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """cameras (N, M, 25) -> images_rgb (N, M, 3, S, S), images_depth / images_weight (N, M, 1, S, S)."""
        n, m = cameras.shape[:2]
        cams = cameras.to(planes.device).float()
        origins, dirs = camera_rays(cams[..., :16].reshape(-1, 4, 4), cams[..., 16:25].reshape(-1, 3, 3), render_size)
        half = self.config.samples_per_ray // 2
        opts = RenderOptions(half, half, self.config.box_warp, self.config.bbox_min, self.config.bbox_max)
        planes_b = planes.repeat_interleave(m, dim=0)
        rgb, depth, weight = render_rays(lambda p: self.query_raw(planes_b, p), origins, dirs, opts,
                                         deterministic, generator)

        def image(x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 1).reshape(n, m, x.shape[-1], render_size, render_size)

        return {"images_rgb": image(rgb), "images_depth": image(depth), "images_weight": image(weight)}

    # -- checkpoints -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, *, local_files_only: bool = False,
                        dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                        config: LRMConfig | None = None, progress=None) -> "LRM":
        """Load from a folder, a ``.safetensors`` file, a reference torch checkpoint or a hub id."""
        from orbitmesh.models.lrm.loading import from_pretrained

        return from_pretrained(path_or_repo_id, local_files_only=local_files_only, dtype=dtype, device=device,
                               config=config, progress=progress)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` (our key names) into ``folder``, atomically."""
        from orbitmesh.models.lrm.loading import save_pretrained

        save_pretrained(self, folder)
