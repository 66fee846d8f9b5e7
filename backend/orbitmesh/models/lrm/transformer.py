"""Camera embedder and the adaLN-modulated triplane transformer.

Module and parameter names follow the reference (``norm1.mlp.1``, ``cross_attn.q_proj_weight``,
``self_attn.in_proj_weight``, ``mlp.0``/``mlp.3``, ``deconv``) so checkpoints map 1:1.
"""

from __future__ import annotations

import torch
from torch import nn


class CameraEmbedder(nn.Module):
    """(N, 16) camera numbers -> (N, D) embedding: Linear - SiLU - Linear."""

    def __init__(self, raw_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(raw_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, camera: torch.Tensor) -> torch.Tensor:
        return self.mlp(camera)


class ModLN(nn.Module):
    """LayerNorm modulated by a condition: norm(x) * (1 + scale) + shift, (shift, scale) = Linear(SiLU(c))."""

    def __init__(self, dim: int, mod_dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(mod_dim, dim * 2))

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mlp(mod).chunk(2, dim=-1)  # (N, D) each
        return self.norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class ConditionModulationBlock(nn.Module):
    """Cross-attention to image tokens, self-attention, MLP; each after a modulated LayerNorm."""

    def __init__(self, dim: int, cond_dim: int, mod_dim: int, num_heads: int, eps: float,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = ModLN(dim, mod_dim, eps)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, kdim=cond_dim, vdim=cond_dim, bias=False,
                                                batch_first=True)
        self.norm2 = ModLN(dim, mod_dim, eps)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, bias=False, batch_first=True)
        self.norm3 = ModLN(dim, mod_dim, eps)
        hidden = int(dim * mlp_ratio)
        # Identity where the reference has Dropout keeps the parameter indices (mlp.0, mlp.3).
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim),
                                 nn.Identity())

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """x (N, L, D), cond (N, Lc, Dc), mod (N, Dm) -> (N, L, D)."""
        h = self.norm1(x, mod)
        x = x + self.cross_attn(h, cond, cond, need_weights=False)[0]
        h = self.norm2(x, mod)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm3(x, mod))


class TriplaneTransformer(nn.Module):
    """Learned (3*r*r) tokens attend to the image; a stride-2 deconv per plane makes (N, 3, C, 2r, 2r)."""

    def __init__(self, dim: int, image_feat_dim: int, camera_embed_dim: int, low_res: int, triplane_dim: int,
                 num_layers: int, num_heads: int, eps: float = 1e-6, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.low_res = low_res
        self.pos_embed = nn.Parameter(torch.randn(1, 3 * low_res ** 2, dim) * dim ** -0.5)
        self.layers = nn.ModuleList([
            ConditionModulationBlock(dim, image_feat_dim, camera_embed_dim, num_heads, eps, mlp_ratio)
            for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.deconv = nn.ConvTranspose2d(dim, triplane_dim, kernel_size=2, stride=2, padding=0)

    def forward(self, image_feats: torch.Tensor, camera_embeddings: torch.Tensor, tokens: torch.Tensor | None = None,
                progress=None) -> torch.Tensor:
        """image_feats (N, Lc, Dc), camera_embeddings (N, Dm) -> planes (N, 3, C, 2r, 2r).

        ``tokens`` (N, 3 r^2, D), optional, is added to the learned positions (pixel-aligned lifting).

        ``progress(step, total)`` (optional) is called after each block (it may raise to cancel).
        """
        n = image_feats.shape[0]
        x = self.pos_embed.expand(n, -1, -1).to(image_feats.dtype)
        if tokens is not None:
            x = x + tokens.to(x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, image_feats, camera_embeddings)
            if progress is not None:
                progress(i + 1, len(self.layers))
        return self.planes_from_tokens(self.norm(x))

    def planes_from_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens (N, 3 r^2, D) -> planes (N, 3, C, 2r, 2r) through the per-plane deconv."""
        n, r = x.shape[0], self.low_res
        x = x.view(n, 3, r, r, -1).permute(0, 1, 4, 2, 3).reshape(n * 3, -1, r, r)  # (3N, D, r, r)
        x = self.deconv(x)
        return x.view(n, 3, *x.shape[-3:])
