"""MeshStats: what the mesh stage produced and how long each step took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class MeshStats:
    """Counts, texture facts and per-step seconds of one field -> mesh run.

    ``timings`` maps step name -> seconds in the order the steps ran.
    ``uv_coverage`` is the fraction of texels whose centre lies inside a UV triangle.
    """

    faces: int = 0
    vertices: int = 0
    texture_size: int = 0
    uv_coverage: float = 0.0
    charts: int = 0
    extract_stride: int = 1
    extracted_faces: int = 0
    components_removed: int = 0
    boundary_closed: bool = False
    out_path: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=dict)  # CPU seconds, children included
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds_total(self) -> float:
        return float(sum(self.timings.values()))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds_total"] = self.seconds_total
        d["cpu_seconds_total"] = float(sum(self.cpu_timings.values()))
        return d

    def summary(self) -> str:
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        tex = f", texture {self.texture_size}^2 ({self.uv_coverage:.0%} used, {self.charts} charts)" \
            if self.texture_size else ""
        return (f"{self.faces} faces, {self.vertices} vertices{tex}; "
                f"{self.seconds_total:.2f}s total ({steps})")
