"""SV3D: the SGM video UNet on diffusers, its SGM checkpoint converter, sampler and pipeline.

Heavy imports (torch, diffusers, transformers) happen inside the submodules; importing this
package is cheap.
"""

from __future__ import annotations
