"""The xatlas calls themselves. Kept free of other imports so a forked child stays small.

xatlas is imported here at module level so a forked child never needs the import machinery
(whose lock another thread of the parent may have held at fork time).
"""

from __future__ import annotations

import numpy as np
import xatlas


def run_xatlas(pieces: list[tuple[np.ndarray, np.ndarray]], chart: dict, pack: dict) -> dict:
    """Chart and pack ``pieces`` ((N_i, 3) float32 positions, (M_i, 3) uint32 faces) into one atlas.

    Returns {"meshes": [(vmapping (K_i,) uint32, faces (M_i, 3) uint32, uvs (K_i, 2) float32)],
    "width", "height", "atlas_count", "charts", "utilization"}; uvs are normalised to [0, 1].
    """
    atlas = xatlas.Atlas()
    for v, f in pieces:
        atlas.add_mesh(np.ascontiguousarray(v, np.float32), np.ascontiguousarray(f, np.uint32))
    co = xatlas.ChartOptions()
    for k, val in chart.items():
        setattr(co, k, val)
    po = xatlas.PackOptions()
    for k, val in pack.items():
        setattr(po, k, val)
    atlas.generate(co, po)
    util = atlas.utilization
    return {"meshes": [atlas[i] if hasattr(atlas, "__getitem__") else atlas.get_mesh(i)
                       for i in range(atlas.mesh_count)],
            "width": int(atlas.width), "height": int(atlas.height),
            "atlas_count": int(atlas.atlas_count), "charts": int(atlas.chart_count),
            "utilization": float(util[0] if np.ndim(util) else util)}

