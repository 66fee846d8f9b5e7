"""TripoSR's Transformer1D: GroupNorm, proj_in, diffusers-style transformer blocks, proj_out, residual.

A block is LayerNorm + self-attention, LayerNorm + cross-attention to the image tokens,
LayerNorm + feed-forward (GEGLU by default), each residual. Module names follow the reference
(``transformer_blocks.N.attn1.to_q``, ``ff.net.0.proj``, ``ff.net.2``) so checkpoints map 1:1.
Attention is ``scaled_dot_product_attention`` with scale 1/sqrt(head_dim), as the reference's
``AttnProcessor2_0``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from orbitmesh.models.triposr.config import BackboneConfig


class Attention(nn.Module):
    """Multi-head attention of (N, L, query_dim) queries over (N, S, kv_dim) context (itself when None)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, *, kv_dim: int | None = None, bias: bool = False,
                 dropout: float = 0.0, upcast: bool = False) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.upcast = heads, upcast
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        n = x.shape[0]
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        head_dim = q.shape[-1] // self.heads
        q, k, v = (t.view(n, -1, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        dtype = q.dtype
        if self.upcast:  # attention in float32 under mixed precision
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v).to(dtype)
        out = out.transpose(1, 2).reshape(n, -1, self.heads * head_dim)
        return self.to_out[1](self.to_out[0](out))


class GELU(nn.Module):
    """Linear then GELU (``approximate="tanh"`` for gelu-approximate)."""

    def __init__(self, dim_in: int, dim_out: int, approximate: str = "none") -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate=self.approximate)


class GEGLU(nn.Module):
    """Gated GELU: Linear to 2 x dim_out, value * gelu(gate)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class ApproximateGELU(nn.Module):
    """Linear then x * sigmoid(1.702 x) (the reference's ``geglu-approximate``)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return x * torch.sigmoid(1.702 * x)


def _activation(name: str, dim: int, inner: int) -> nn.Module:
    if name == "gelu":
        return GELU(dim, inner)
    if name == "gelu-approximate":
        return GELU(dim, inner, approximate="tanh")
    if name == "geglu":
        return GEGLU(dim, inner)
    return ApproximateGELU(dim, inner)  # "geglu-approximate" (config.FEED_FORWARD_ACTIVATIONS)


class FeedForward(nn.Module):
    """``net``: [activation projection (dim -> 4 dim), Dropout, Linear (4 dim -> dim)]."""

    def __init__(self, dim: int, activation_fn: str, dropout: float = 0.0, mult: int = 4) -> None:
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.ModuleList([_activation(activation_fn, dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            x = module(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Self-attention (cross-attention when ``only_cross_attention``), cross-attention, feed-forward.

    As the reference: ``attn2`` exists when there is a cross_attention_dim or ``double_self_attention``
    (then its keys come from the block width) and is always given the image tokens.
    """

    def __init__(self, dim: int, config: BackboneConfig) -> None:
        super().__init__()
        c = config
        affine = c.norm_elementwise_affine
        self.only_cross_attention = c.only_cross_attention
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine)
        self.attn1 = Attention(dim, c.num_attention_heads, c.attention_head_dim, bias=c.attention_bias,
                               dropout=c.dropout, upcast=c.upcast_attention,
                               kv_dim=c.cross_attention_dim if c.only_cross_attention else None)
        self.norm2 = self.attn2 = None
        if c.cross_attention_dim is not None or c.double_self_attention:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine)
            self.attn2 = Attention(dim, c.num_attention_heads, c.attention_head_dim, bias=c.attention_bias,
                                   dropout=c.dropout, upcast=c.upcast_attention,
                                   kv_dim=None if c.double_self_attention else c.cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=affine)
        self.ff = FeedForward(dim, c.activation_fn, c.dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x (N, L, D), context (N, S, Dc) image tokens -> (N, L, D)."""
        x = self.attn1(self.norm1(x), context if self.only_cross_attention else None) + x
        if self.attn2 is not None:
            x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer1D(nn.Module):
    """tokens (N, C, L) + image tokens (N, S, Dc) -> tokens (N, C, L): GroupNorm, proj_in, blocks, proj_out, + input."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        inner = config.inner_dim
        self.gradient_checkpointing = config.gradient_checkpointing
        self.norm = nn.GroupNorm(config.norm_num_groups, config.in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(config.in_channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, config) for _ in range(config.num_layers)])
        self.proj_out = nn.Linear(inner, config.in_channels)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor,
                progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """``progress(step, total)`` (optional) is called after each block (it may raise to cancel)."""
        residual = tokens
        x = self.proj_in(self.norm(tokens).permute(0, 2, 1))  # (N, L, inner)
        total = len(self.transformer_blocks)
        for i, block in enumerate(self.transformer_blocks):
            if self.training and self.gradient_checkpointing:
                x = checkpoint(block, x, context, use_reentrant=False)
            else:
                x = block(x, context)
            if progress is not None:
                progress(i + 1, total)
        return self.proj_out(x).permute(0, 2, 1).contiguous() + residual
