"""Fast density-grid queries: per-plane factorised decoder and the narrow-band grid vs the brute force."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from orbitmesh.bench.lrm import blob_field
from orbitmesh.errors import InputError, JobCancelled
from orbitmesh.mesh import extract_surface
from orbitmesh.models.lrm import LRM, tiny
from orbitmesh.pipeline.orchestrator import StageContext
from orbitmesh.pipeline.reconstruct import (
    GridQueryStage,
    band_density_grid,
    density_grid,
    mesh_threshold,
)


@pytest.fixture(scope="module")
def blob():
    """An analytic object (bumpy ellipsoid + a small separate blob) on 64^2 planes, threshold 1.0."""
    model = LRM(replace(tiny(), mesh_threshold=1.0)).eval()
    return model, blob_field(model, texels=64)


def test_grid_tables_equal_point_queries(random_lrm):
    """Factorised first layer == concatenated features through Linear(3C, H), on a skewed grid."""
    model, planes = random_lrm
    axes = (torch.linspace(-1, 1, 7), torch.linspace(-0.9, 0.8, 5), torch.linspace(-1.1, 1.0, 6))
    tables = model.grid_tables(planes, axes)
    ix, iy, iz = (t.reshape(-1) for t in torch.meshgrid(*(torch.arange(len(a)) for a in axes), indexing="ij"))
    pts = torch.stack([axes[0][ix], axes[1][iy], axes[2][iz]], -1)[None]
    with torch.no_grad():
        ref = model.query_raw(planes, pts)
        raw = tables.raw(ix, iy, iz)
    np.testing.assert_allclose(raw[:, :1].numpy(), ref["sigma"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(torch.sigmoid(raw[:, 1:]).numpy() * 1.002 - 0.001, ref["rgb"][0].numpy(), atol=1e-5)
    assert float(ref["sigma"].std()) > 1e-3  # a field that varies, not a constant


def test_dense_grid_equals_brute_force(random_lrm, point_query_density):
    model, planes = random_lrm
    r = 17
    dense = density_grid(model, planes, r, method="dense", chunk_size=300)
    brute = density_grid(model, planes, r, method="points")
    ref = point_query_density(model, planes, r)
    np.testing.assert_allclose(brute, ref, atol=1e-6)
    np.testing.assert_allclose(dense, ref, atol=1e-5)
    with pytest.raises(ValueError, match="dense"):
        density_grid(model, planes, r, method="band")


@pytest.mark.parametrize("field,r", [("blob", 96), ("random_lrm", 64)])
def test_band_matches_brute_force(field, r, request):
    model, planes = request.getfixturevalue(field)
    band = band_density_grid(model, planes, r)
    brute = density_grid(model, planes, r, method="points")
    t = band.threshold
    assert t == mesh_threshold(model.config, brute)  # same lattice samples -> same adaptive threshold
    mask = band.band_mask()
    assert mask.any()
    # inside the band: the brute-force values (up to the factorised sum's rounding)
    np.testing.assert_allclose(band.density[mask], brute[mask], atol=1e-5)
    # the lattice is exact everywhere
    lat = np.r_[0:r:4, r - 1]
    np.testing.assert_allclose(band.density[np.ix_(lat, lat, lat)], brute[np.ix_(lat, lat, lat)], atol=1e-5)
    # every cell the surface crosses lies wholly in the band
    inside = brute > t
    cells = np.zeros((r - 1,) * 3, bool)
    all_in = np.ones((r - 1,) * 3, bool)
    covered = np.ones((r - 1,) * 3, bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                s = (slice(dx, r - 1 + dx), slice(dy, r - 1 + dy), slice(dz, r - 1 + dz))
                cells |= inside[s]
                all_in &= inside[s]
                covered &= mask[s]
    crossing = cells & ~all_in
    assert crossing.sum() > 100 and covered[crossing].all()
    # outside the band: same inside/outside classification, so the same mesh
    np.testing.assert_array_equal(band.density > t, inside)
    a = extract_surface(band.density, t, target_faces=None, close_boundary=True)
    b = extract_surface(brute, t, target_faces=None, close_boundary=True)
    assert a.faces.shape == b.faces.shape and np.array_equal(a.faces, b.faces)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-4)
    if field == "blob":  # a compact object: most of the box is filled from the lattice
        assert band.evaluated_fraction < 0.3
        assert 0.01 < inside.mean() < 0.2


def test_band_outside_is_trilinear_between_corners(blob):
    """Points outside the band lie between their block's lattice corner values (trilinear fill)."""
    model, planes = blob
    r = 64
    band = band_density_grid(model, planes, r)
    mask = band.band_mask()
    d = band.density
    i, j, k = np.argwhere(~mask)[:: max(1, int((~mask).sum()) // 500)].T
    nb = band.flags.shape[0]
    lat = np.minimum(np.arange(nb + 1) * 4, r - 1)
    bi, bj, bk = (np.minimum(x // 4, nb - 1) for x in (i, j, k))
    corners = np.stack([d[lat[bi + a], lat[bj + b], lat[bk + c]]
                        for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    assert len(i) > 100
    assert (d[i, j, k] >= corners.min(0) - 1e-6).all() and (d[i, j, k] <= corners.max(0) + 1e-6).all()


def test_stage_band_default_and_brute_force_flag(random_lrm, monkeypatch):
    model, planes = random_lrm
    steps = []

    def run(stage):
        ctx = StageContext(job=None, progress=lambda *a: steps.append(a), state={"lrm": model, "planes": planes})
        stage.run(ctx)
        return ctx.state

    fast = run(GridQueryStage(32))
    assert fast.grid_stats["method"] == "band" and steps[-1][1] == steps[-1][2]
    slow = run(GridQueryStage(32, method="points"))
    assert slow.grid_stats["method"] == "points" and slow.grid_stats["evaluated_fraction"] == 1.0
    assert fast.threshold == slow.threshold
    np.testing.assert_array_equal(fast.density > fast.threshold, slow.density > slow.threshold)
    monkeypatch.setenv("ORBITMESH_GRID_METHOD", "points")
    assert GridQueryStage(32).method == "points"
    monkeypatch.setenv("ORBITMESH_GRID_METHOD", "fastest")
    with pytest.raises(InputError, match="fastest"):
        GridQueryStage(32)


def test_band_progress_can_cancel(random_lrm):
    model, planes = random_lrm
    seen = []

    def progress(step, total):
        seen.append((step, total))
        if step == 3:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        band_density_grid(model, planes, 33, progress=progress)
    assert seen == [(1, 9), (2, 9), (3, 9)]
