"""Procedural data: the SDF sphere tracer against closed forms, seeded objects, caches, folders, batches."""

from __future__ import annotations

import json
import math

import pytest
import torch

from orbitmesh.data.dataset import MultiViewData, folder_dataset, make_batch, procedural_dataset
from orbitmesh.data.procedural import HELD_OUT_SEED_START, ProceduralConfig, make_sample, make_shape
from orbitmesh.data.render import (
    camera_rays,
    look_at,
    orbit_camera,
    ray_sphere,
    render_view,
    source_camera,
    sphere_trace,
)
from orbitmesh.data.sdf import Part, Shape, grid_points
from orbitmesh.errors import InputError


def _single(kind: str, params: tuple, rotation=None, translation=(0.0, 0.0, 0.0)) -> Shape:
    part = Part(kind, params, torch.eye(3) if rotation is None else rotation, torch.tensor(translation),
                (0.8, 0.2, 0.2), (0.8, 0.2, 0.2))
    return Shape([part])


def test_source_camera_is_the_lrm_canonical_camera():
    expected = torch.tensor([[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.float32)
    assert torch.allclose(source_camera(), expected, atol=1e-6)
    # The centre ray looks at the origin; the top row of pixels looks up (+z), the left column at -y.
    o, d = camera_rays(source_camera(), (0.75, 0.75, 0.5, 0.5), 5, 5)
    assert torch.allclose(d[12], torch.tensor([-1.0, 0, 0]), atol=1e-6)
    assert d[2, 2] > 0 and d[10, 1] < 0


@pytest.mark.parametrize("distance,radius", [(1.0, 0.5), (1.5, 0.35)])
def test_sphere_render_matches_closed_form(distance, radius):
    shape = _single("sphere", (radius,))
    c2w = orbit_camera(30.0, 20.0, distance)
    size = 48
    view = render_view(shape, c2w, size)
    o, d = camera_rays(c2w, (0.75, 0.75, 0.5, 0.5), size, size)
    t_near, _, hit = ray_sphere(o, d, radius)
    # Silhouette: identical except at pixels whose ray grazes the sphere.
    b = (o * d).sum(-1)
    closest = ((o * o).sum(-1) - b * b).clamp(min=0).sqrt()
    grazing = (closest - radius).abs() < 2e-3
    alpha = view.alpha.reshape(-1) > 0.5
    assert alpha.sum() > 100
    assert torch.equal(alpha[~grazing], hit[~grazing])
    # Depth (ray distance) matches the analytic entry point.
    both = alpha & hit & ~grazing
    assert (view.depth.reshape(-1)[both] - t_near[both]).abs().max() < 2e-3
    # Background is white, foreground is shaded red.
    rgb = view.rgb.reshape(-1, 3)
    assert torch.all(rgb[~hit & ~grazing] == 1.0)
    assert torch.all(rgb[both, 0] > rgb[both, 1])


def _ray_box(o, d, half):
    inv = 1.0 / d
    t0 = (-half - o) * inv
    t1 = (half - o) * inv
    near = torch.minimum(t0, t1).max(-1).values
    far = torch.maximum(t0, t1).min(-1).values
    return near, (far > near) & (far > 0)


def test_box_render_matches_closed_form():
    half = torch.tensor([0.3, 0.2, 0.25])
    shape = _single("box", tuple(half.tolist()))
    c2w = look_at((1.1, 0.6, 0.5))
    size = 48
    view = render_view(shape, c2w, size)
    o, d = camera_rays(c2w, (0.75, 0.75, 0.5, 0.5), size, size)
    near, hit = _ray_box(o, d, half)
    alpha = view.alpha.reshape(-1) > 0.5
    # Pixels whose ray passes within 1e-2 of an edge may differ; all others must agree.
    near_edge = torch.zeros_like(hit)
    for scale in (0.985, 1.015):
        near_edge |= _ray_box(o, d, half * scale)[1] != hit
    assert hit.sum() > 100
    assert torch.equal(alpha[~near_edge], hit[~near_edge])
    both = alpha & hit & ~near_edge
    assert (view.depth.reshape(-1)[both] - near[both]).abs().max() < 2e-3
    # Face-on: a camera on +x sees a rectangle of the box's y/z half extents at depth 1 - 0.3.
    front = render_view(shape, source_camera(), 60)
    assert abs(float(front.depth[30, 30]) - 0.7) < 1e-3
    rows = (front.alpha > 0.5).any(1).sum().item()
    cols = (front.alpha > 0.5).any(0).sum().item()
    # Projected half extent = 0.75 * half / 0.7 of the image width.
    assert abs(cols - 60 * 2 * 0.75 * 0.2 / 0.7) <= 1.01 and abs(rows - 60 * 2 * 0.75 * 0.25 / 0.7) <= 1.01


def test_primitive_sdfs_are_distances():
    """Every primitive: |grad sdf| ~ 1 away from the surface and a consistent sign at the centre."""
    rng = torch.Generator().manual_seed(0)
    pts = (torch.rand(2000, 3, generator=rng) - 0.5) * 2.0
    cases = {"sphere": (0.3,), "box": (0.3, 0.2, 0.1), "rounded_box": (0.3, 0.2, 0.25, 0.05),
             "cylinder": (0.2, 0.3), "cone": (0.3, 0.25, 0.05), "torus": (0.3, 0.08), "capsule": (0.25, 0.1)}
    for kind, params in cases.items():
        shape = _single(kind, params)
        d = shape.sdf(pts)
        n = shape.normals(pts, eps=1e-3)
        step = shape.sdf(pts + 1e-3 * n) - d
        assert torch.allclose(step, torch.full_like(step, 1e-3), atol=2e-4), kind
        centre_inside = kind != "torus"
        assert (shape.sdf(torch.zeros(1, 3)) < 0).item() == centre_inside, kind


def test_make_shape_is_seeded_and_fits_the_source_view():
    a, b = make_shape(7), make_shape(7)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())
    assert json.dumps(make_shape(8).to_dict()) != json.dumps(a.to_dict())
    pts = grid_points(40, -1.0, 1.0)
    for seed in range(12):
        shape = make_shape(seed)
        inside = pts[shape.occupancy(pts)]
        assert inside.shape[0] > 20
        assert inside.norm(dim=-1).max() < 0.55
        assert 1 <= len(shape.parts) <= 4
    # The description round-trips to the same field.
    c = Shape.from_dict(a.to_dict())
    assert torch.allclose(c.sdf(pts[:500]), a.sdf(pts[:500]))


def test_sample_views_and_cameras():
    sample = make_sample(3, ProceduralConfig(input_size=32, input_supersample=2, view_size=16, views=4,
                                             input_jitter_deg=0.0))
    assert torch.allclose(sample.input.c2w, source_camera(), atol=1e-6)
    assert sample.input.rgb.shape == (32, 32, 3) and len(sample.views) == 4
    assert torch.allclose(sample.views[0].c2w, sample.input.c2w)  # the input view is supervised too
    for v in sample.views[1:]:
        assert abs(float(v.c2w[:, 3].norm()) - 1.5) < 1e-5
        assert v.alpha.sum() > 5  # the object is in view
    # Fractional alpha only on the supersampled silhouette; colours on white outside.
    assert ((sample.input.alpha > 0) & (sample.input.alpha < 1)).any()
    assert torch.all(sample.input.rgb[sample.input.alpha == 0] == 1.0)


def test_procedural_dataset_cache_and_held_out_seeds(tmp_path, small_procedural):
    data = procedural_dataset(5, 3, small_procedural, n_points=256, cache_dir=tmp_path)
    files = list(tmp_path.glob("procedural-*.npz"))
    assert len(files) == 1
    again = procedural_dataset(5, 3, small_procedural, n_points=256, cache_dir=tmp_path)
    assert torch.equal(again.view_rgb, data.view_rgb) and torch.equal(again.seeds, torch.tensor([5, 6, 7]))
    assert data.points.shape == (3, 256, 3) and 0.05 < data.occupancy.float().mean() < 0.95
    with pytest.raises(InputError, match="held out"):
        procedural_dataset(HELD_OUT_SEED_START - 1, 2, small_procedural)
    files[0].write_bytes(b"not a zip")
    with pytest.raises(InputError, match="delete the file"):
        MultiViewData.load(files[0])


def test_batch_rays_hit_the_ground_truth():
    data = procedural_dataset(11, 2, ProceduralConfig(input_size=32, input_supersample=1, view_size=32, views=4),
                              n_points=128)
    gen = torch.Generator().manual_seed(0)
    batch = make_batch(data, [0, 1], render_size=32, rays_per_sample=256, views_per_sample=2, generator=gen,
                       points_per_sample=64)
    assert batch.images.shape == (2, 3, 32, 32) and batch.origins.shape == (2, 256, 3)
    assert batch.points.shape == (2, 64, 3)
    for i, seed in enumerate((11, 12)):
        shape = make_shape(seed)
        _, hit = sphere_trace(shape, batch.origins[i], batch.dirs[i])
        # view_size == render_size: the targets are the binary masks of those rays.
        assert (hit == (batch.alpha[i] > 0.5)).float().mean() > 0.97
        assert 0.3 < batch.alpha[i].mean() < 0.9  # the foreground is over-sampled
        occ = shape.occupancy(batch.points[i]).float()
        assert torch.equal(occ, batch.occupancy[i])


def test_folder_dataset_round_trip_and_errors(tmp_path, write_render_folder, small_procedural):
    data = procedural_dataset(20, 2, small_procedural, n_points=0)
    write_render_folder(tmp_path / "renders", data, (20, 21))
    loaded = folder_dataset(tmp_path / "renders", input_size=32, view_size=16)
    assert len(loaded) == 2 and loaded.points is None
    assert torch.equal(loaded.view_alpha, data.view_alpha)
    assert (loaded.view_rgb.int() - data.view_rgb.int()).abs().max() <= 1
    assert torch.allclose(loaded.view_c2w, data.view_c2w)
    # The input is not one of the frames: the canonical source camera is assumed.
    assert torch.allclose(loaded.source_camera[0, :12], source_camera().reshape(-1))
    single = folder_dataset(tmp_path / "renders" / "obj20", input_size=16, view_size=8)
    assert single.input_rgb.shape == (1, 16, 16, 3) and single.view_rgb.shape[2] == 8

    with pytest.raises(InputError, match="no cameras.json"):
        folder_dataset(tmp_path, 32, 16)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cameras.json").write_text('{"frames": [{"file": "x.png", "c2w": [[1, 2]]}]}')
    with pytest.raises(InputError, match="3x4 or 4x4"):
        folder_dataset(bad, 32, 16)
    (bad / "cameras.json").write_text("{nope")
    with pytest.raises(InputError, match="not a valid cameras.json"):
        folder_dataset(bad, 32, 16)


def test_render_view_depth_uses_ray_distance():
    shape = _single("sphere", (0.4,))
    view = render_view(shape, source_camera(), 9)
    # The centre pixel's ray hits the sphere at x = 0.4: distance 0.6 from the camera at x = 1.
    assert math.isclose(float(view.depth[4, 4]), 0.6, abs_tol=1e-3)
    assert float(view.depth[0, 0]) == 0.0 and float(view.alpha[0, 0]) == 0.0


@pytest.mark.blender
def test_render_views_script_renders_a_matching_folder(tmp_path, repo_root):
    """scripts/render_orbitmesh_views.py (docs/training.md): cameras and silhouettes agree with our renderer."""
    import importlib.util
    import subprocess
    import sys

    # find_spec, not an import: bpy must not load after pymeshlab in this process (embree clash);
    # Blender runs in its own subprocess below.
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("bpy is not installed (pip install bpy==5.0.1)")
    script = repo_root / "scripts" / "render_orbitmesh_views.py"
    runner = tmp_path / "run.py"
    runner.write_text(
        "import runpy, sys, bpy\n"
        "bpy.ops.wm.read_factory_settings(use_empty=False)\n"
        "s = bpy.context.scene\n"
        "s.render.engine = 'CYCLES'; s.cycles.samples = 4; s.cycles.device = 'CPU'\n"
        "s.render.threads_mode = 'FIXED'; s.render.threads = 1\n"
        "bpy.data.objects['Cube'].scale = (0.6, 0.3, 0.4)\n"
        f"sys.argv = ['blender', '-b', '-P', {str(script)!r}, '--', {str(tmp_path / 'out')!r}, '3', '32']\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, str(runner)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = folder_dataset(tmp_path / "out", input_size=32, view_size=32)
    assert data.view_rgb.shape[:2] == (1, 4)
    assert torch.allclose(data.source_camera[0, :12], source_camera().reshape(-1), atol=1e-6)
    # The default cube scaled to half extents (0.6, 0.3, 0.4), normalised to a bounding radius of 0.5.
    s = 0.5 / math.sqrt(0.6 ** 2 + 0.3 ** 2 + 0.4 ** 2)
    box = _single("box", (0.6 * s, 0.3 * s, 0.4 * s))
    for v in range(4):
        ours = render_view(box, data.view_c2w[0, v], 32, data.view_intrinsics[0, v].tolist(), supersample=4).alpha
        theirs = data.view_alpha[0, v].float() / 255.0
        assert (ours - theirs).abs().mean() < 0.03
        assert ((ours > 0.5) != (theirs > 0.5)).sum() <= 0.12 * (ours > 0.5).sum()
