"""Training losses for the LRM family.

- ``rgb``: MSE between rendered and target colours (on white) of random rays.
- ``mask``: MSE between the accumulated opacity and the target alpha (VFusion3D's opacity loss).
- ``occupancy``: 3D supervision where ground truth exists (procedural data): binary cross-entropy
  of ``(density - t) / (t / 5)`` against inside/outside, ``t`` = ``occupancy_density``, so the
  density crosses ``t`` on the surface (the mesh threshold) and falls to ~0 in empty space.
- ``surface_rgb``: MSE of the colour field at ground-truth surface points vs their shaded colour.
- ``perceptual``: feature distance of rendered vs target views under a frozen vision model
  loaded from a local folder (``transformers`` ``AutoModel``, e.g. a DINOv2 checkpoint), only
  when that folder exists; never downloaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F


def rgb_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, R, 3) each -> scalar MSE."""
    return F.mse_loss(pred.float(), target.float())


def mask_loss(weight: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """accumulated weight (B, R, 1) vs alpha (B, R) -> scalar MSE."""
    return F.mse_loss(weight.float().squeeze(-1), alpha.float())


def occupancy_loss(density: torch.Tensor, occupancy: torch.Tensor, threshold: float) -> torch.Tensor:
    """density (B, K, 1) activated, occupancy (B, K) in {0, 1} -> scalar BCE."""
    logits = (density.float().squeeze(-1) - threshold) / (threshold / 5.0)
    return F.binary_cross_entropy_with_logits(logits, occupancy.float())


class PerceptualLoss(torch.nn.Module):
    """Mean squared distance of normalised patch features of a frozen local vision model.

    ``PerceptualLoss.load(folder)`` returns None (with a warning) when the folder is missing, so
    a config can name a model that only some machines have.
    """

    def __init__(self, model: torch.nn.Module, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def load(cls, folder: str | None, device="cpu") -> "PerceptualLoss | None":
        if not folder:
            return None
        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            warnings.warn(f"perceptual loss skipped: no model at {path} (needs config.json + weights)", stacklevel=2)
            return None
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        return cls(model).to(device)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, L, D) unit-normalised token features."""
        x = (images.float() - self.mean) / self.std
        out = self.model(pixel_values=x)
        return F.normalize(out.last_hidden_state.float(), dim=-1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ft = self.features(target)
        return (self.features(pred) - ft).pow(2).sum(-1).mean()
