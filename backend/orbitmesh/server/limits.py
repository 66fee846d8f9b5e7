"""What a server lets one job ask for: caps on the heavy settings, a memory estimate and the disk a job needs.

A local server is shared (a studio's GPU workstation): one client asking for ``mc_resolution`` 1024 (10+ GB of
RAM) or an 8192 texture on two million faces would stall every artist behind it. The caps are the operator's
(``serve --max-mc-resolution/--max-texture-size/--max-faces``); the estimates are deliberately simple, linear in
what dominates, calibrated on the CPU pipeline (512^3 peaked at 1.8 GB RSS, 1024^3 passed 7 GB in 18 s).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orbitmesh.server.api_errors import ApiError, bad_request

if TYPE_CHECKING:
    from orbitmesh.pipeline.request import GenerateRequest

# Host memory of one job, in bytes: the process and model, the density grid and marching cubes (per voxel),
# the texture bake (per texel) and UV/decimation (per output face).
BASE_BYTES = 1.5e9
BYTES_PER_VOXEL = 9.0
BYTES_PER_TEXEL = 64.0
BYTES_PER_FACE = 1000.0
# Disk of one job: its upload, the texture (in the GLB and as a PNG), the geometry and small images.
DISK_FIXED_BYTES = 10 << 20
DISK_BYTES_PER_TEXEL = 8
DISK_BYTES_PER_FACE = 100


@dataclass(frozen=True)
class JobLimits:
    """The server's caps (None: no cap beyond the setting's own range)."""

    max_mc_resolution: int | None = 512
    max_texture_size: int | None = 4096
    max_faces: int | None = 500_000
    max_memory_gb: float | None = None  # None: 90% of this machine's RAM

    def check(self, request: GenerateRequest) -> None:
        """400 ``invalid_settings`` naming the setting over a cap and the largest value allowed; 400
        ``too_much_memory`` when the job's estimated memory is over the budget."""
        for key, cap, flag in (("mc_resolution", self.max_mc_resolution, "--max-mc-resolution"),
                               ("texture_size", self.max_texture_size, "--max-texture-size"),
                               ("target_faces", self.max_faces, "--max-faces")):
            value = getattr(request, key)
            if cap is not None and value > cap:
                raise bad_request(f"{key} {value} is over this server's limit of {cap}",
                                  fix=f"send {key} <= {cap}, or ask the operator to raise serve {flag}",
                                  code="invalid_settings")
        need = estimate_memory_bytes(request)
        budget = self.memory_budget_bytes()
        if budget is not None and need > budget:
            raise bad_request(f"this job needs about {need / 1e9:.1f} GB of memory, more than the "
                              f"{budget / 1e9:.1f} GB this server allows one job",
                              fix="lower mc_resolution (memory grows with its cube), texture_size or target_faces",
                              code="too_much_memory")

    def memory_budget_bytes(self) -> float | None:
        if self.max_memory_gb is not None:
            return self.max_memory_gb * 1e9
        total = total_memory_bytes()
        return None if total is None else 0.9 * total


def estimate_memory_bytes(request: GenerateRequest) -> float:
    """Peak host memory of ``request`` in bytes (an estimate, dominated by the grid's cube)."""
    return (BASE_BYTES + BYTES_PER_VOXEL * request.mc_resolution ** 3
            + BYTES_PER_TEXEL * request.texture_size ** 2 + BYTES_PER_FACE * request.target_faces)


def estimate_disk_bytes(request: GenerateRequest, upload_bytes: int = 0) -> int:
    """Disk a job writes: its upload and outputs (tens of MB at the defaults), not a fixed gigabyte."""
    return int(upload_bytes + DISK_FIXED_BYTES + DISK_BYTES_PER_TEXEL * request.texture_size ** 2
               + DISK_BYTES_PER_FACE * request.target_faces)


def check_free_space(root: Path, need: int) -> None:
    """507 ``insufficient_storage`` when the disk holding ``root`` has less than ``need`` bytes free."""
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return  # cannot tell: the writes themselves will say
    if free < need:
        raise ApiError(507, "insufficient_storage",
                       f"the jobs folder's disk has {free / 2**20:.0f} MB free; this job needs about "
                       f"{need / 2**20:.0f} MB", fix="free disk space, or start the server with --keep-jobs N or "
                                                     "--max-disk-gb so old finished jobs are removed")


def total_memory_bytes() -> float | None:
    """This machine's RAM in bytes (None where the platform does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None
