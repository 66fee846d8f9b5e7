"""Fast mode's input view: the photo painted on the surface it shows, and the shape carved to its silhouette."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from orbitmesh.mesh.bake import rasterize as rasterize_uv
from orbitmesh.quality.cameras import Camera, look_at
from orbitmesh.quality.input_texture import input_view_colors
from orbitmesh.quality.project import View
from orbitmesh.quality.raster import project_points, rasterize, silhouettes
from orbitmesh.quality.silhouette import CarveConfig, carve_density

FOCAL = 0.75


def _cube(half: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A cube centred at the origin, each face its own UV chart (a 3 x 2 atlas): vertices (24, 3), faces
    (12, 3) wound outward, uvs (24, 2), and the face indices of each side by name (+x, -x, ...)."""
    sides = {"+x": (0, 1), "-x": (0, -1), "+y": (1, 1), "-y": (1, -1), "+z": (2, 1), "-z": (2, -1)}
    verts, uvs, faces, by_side = [], [], [], {}
    for n, (name, (axis, sign)) in enumerate(sides.items()):
        u_axis, v_axis = [a for a in range(3) if a != axis]
        corners = []
        for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            p = np.zeros(3)
            p[axis], p[u_axis], p[v_axis] = sign * half, du * half, dv * half
            corners.append(p)
        col, row = n % 3, n // 3
        cell = [((col + 0.05 + 0.9 * (du + 1) / 2) / 3, (row + 0.05 + 0.9 * (dv + 1) / 2) / 2)
                for du, dv in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        base = len(verts)
        verts += corners
        uvs += cell
        quad = [[base, base + 1, base + 2], [base, base + 2, base + 3]]
        normal = np.cross(corners[1] - corners[0], corners[2] - corners[0])
        if normal[axis] * sign < 0:  # wind outward
            quad = [q[::-1] for q in quad]
        by_side[name] = np.arange(len(faces), len(faces) + 2)
        faces += quad
    return np.array(verts, np.float32), np.array(faces, np.int64), np.array(uvs, np.float32), by_side


def _photo(size: int) -> np.ndarray:
    """(S, S, 3) float32: smooth colours with detail a 24 px triplane could not hold."""
    yy, xx = np.mgrid[:size, :size] / size
    return np.stack([xx, yy, 0.5 + 0.4 * np.sin(12 * xx) * np.cos(9 * yy)], -1).astype(np.float32)


def test_textured_cube_face_on_takes_the_photo_on_the_visible_face_only():
    size, tex = 256, 256
    v, f, uv, sides = _cube()
    camera = Camera(look_at((1.0, 0.0, 0.0)), (FOCAL, FOCAL, 0.5, 0.5))  # the LRM's source camera, face-on to +x
    mask = rasterize(v, f, camera, size).mask.numpy().astype(np.float32)
    photo = _photo(size)
    r = rasterize_uv(uv, f, tex)
    model = np.tile(np.array([[0.2, 0.3, 0.9]], np.float32), (len(r.face), 1))
    res = input_view_colors(v, f, r.face, r.bary, model, View(photo, mask, camera, "input"))

    front = np.isin(r.face, sides["+x"])
    points = np.einsum("tk,tkd->td", r.bary[front], v[f[r.face[front]]])
    xy, _ = project_points(torch.from_numpy(points), camera, size)
    xy = xy.numpy()
    # the photo at each front texel's projection (bilinear, pixel centres at integers)
    x0, y0 = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    tx, ty = (xy[:, 0] - x0)[:, None], (xy[:, 1] - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    want = ((1 - ty) * ((1 - tx) * photo[y0, x0] + tx * photo[y0, x1]) + ty * ((1 - tx) * photo[y1, x0]
                                                                               + tx * photo[y1, x1]))
    # away from the face's outline (where the photo fades into the model colour) the texels are the photo
    inner = distance_transform_edt(mask > 0.5)[np.clip(np.rint(xy[:, 1]).astype(int), 0, size - 1),
                                               np.clip(np.rint(xy[:, 0]).astype(int), 0, size - 1)] > 3
    assert inner.mean() > 0.85
    assert np.abs(res.colors[front][inner] - want[inner]).mean() < 0.02
    assert np.abs(res.colors[front] - want).mean() < 0.04  # the whole face, fade band included
    assert (res.alpha[front][inner] == 1.0).all()
    # faces the camera cannot see (the back, and the sides, which perspective shows from behind) keep the model
    # colour exactly
    for side in ("-x", "+y", "-y", "+z", "-z"):
        hidden = np.isin(r.face, sides[side])
        assert np.array_equal(res.colors[hidden], model[hidden]) and (res.alpha[hidden] == 0).all(), side


def test_an_occluded_face_keeps_the_model_colour():
    size = 192
    v, f, uv, sides = _cube(0.2)
    v2 = v * 0.5 + np.array([-0.45, 0.0, 0.0], np.float32)  # a small cube hidden behind the first
    verts, faces = np.concatenate([v, v2]), np.concatenate([f, f + len(v)])
    camera = Camera(look_at((1.0, 0.0, 0.0)), (FOCAL, FOCAL, 0.5, 0.5))
    mask = rasterize(verts, faces, camera, size).mask.numpy().astype(np.float32)
    r = rasterize_uv(np.concatenate([uv * 0.5, uv * 0.5 + 0.5]), faces, 256)
    model = np.full((len(r.face), 3), 0.25, np.float32)
    res = input_view_colors(verts, faces, r.face, r.bary, model, View(_photo(size), mask, camera, "input"))
    behind = r.face >= len(f)
    assert np.array_equal(res.colors[behind], model[behind])
    assert (res.alpha[np.isin(r.face, sides["+x"])] > 0).mean() > 0.7  # the front face in front is painted


def test_a_view_prepared_from_the_unsplit_surface_paints_exactly_like_the_split_one():
    """The mesh stage prepares the view (depth buffer, edges) from the surface before its UVs exist, while
    xatlas runs; the painting then gets the UV mesh, the same surface with vertices split along seams."""
    from orbitmesh.quality.input_texture import prepare_view

    size = 192
    v, f, uv, _ = _cube(0.2)
    # the unsplit cube: the 8 corners, faces re-indexed onto them
    corners, inverse = np.unique(np.round(v, 6), axis=0, return_inverse=True)
    unsplit = inverse.reshape(-1)[f]
    camera = Camera(look_at((0.9, 0.3, 0.2)), (FOCAL, FOCAL, 0.5, 0.5))  # three faces seen, at angles
    view = View(_photo(size), rasterize(v, f, camera, size).mask.numpy().astype(np.float32), camera, "input")
    r = rasterize_uv(uv, f, 256)
    model = np.full((len(r.face), 3), 0.3, np.float32)
    direct = input_view_colors(v, f, r.face, r.bary, model, view)
    prepared = prepare_view(corners.astype(np.float32), unsplit, view)
    ahead = input_view_colors(v, f, r.face, r.bary, model, view, prepared=prepared)
    assert (direct.alpha > 0).mean() > 0.1  # three of the six sides, at angles
    assert np.array_equal(direct.colors, ahead.colors) and np.array_equal(direct.alpha, ahead.alpha)


def test_the_bake_skips_the_colour_field_where_the_photo_replaces_it():
    """Texels the photo replaces outright need no model colour: the bake does not evaluate the colour field
    there, except every match_every-th of them for the colour match, and the texture comes out as with them."""
    from orbitmesh.mesh.bake import bake_texture
    from orbitmesh.quality.input_texture import InputTextureConfig, observe_texels, paint, replaced_texels

    size, tex = 192, 256
    v, f, uv, sides = _cube()
    camera = Camera(look_at((1.0, 0.0, 0.0)), (FOCAL, FOCAL, 0.5, 0.5))
    view = View(_photo(size), rasterize(v, f, camera, size).mask.numpy().astype(np.float32), camera, "input")
    evaluated = []

    def color_fn(points):
        evaluated.append(len(points))
        return np.tile(np.array([[0.7, 0.3, 0.2]], np.float32), (len(points), 1)) + 0.1 * points

    seen = {}

    def replaced(r, points):
        seen["obs"] = observe_texels(v, f, r.face, r.bary, view, texel_points=points)
        seen["skip"] = replaced_texels(seen["obs"])
        return seen["skip"]

    def adjust(r, points, colors):
        assert np.all(colors[seen["skip"]] == 0)  # never computed
        return paint(seen["obs"], colors, known=~seen["skip"]).colors

    image, r = bake_texture(v, f, uv, color_fn, tex, adjust=adjust, replaced=replaced)
    skip, full = seen["skip"], seen["obs"].alpha >= 1.0
    assert full.mean() > 0.1 and skip.sum() == full.sum() - len(range(0, full.sum(), InputTextureConfig().match_every))
    assert sum(evaluated) == len(r.face) - skip.sum()
    reference, _ = bake_texture(v, f, uv, color_fn, tex, adjust=lambda rr, p, c: input_view_colors(
        v, f, rr.face, rr.bary, c, view, texel_points=p).colors)
    diff = np.abs(image.astype(int) - reference.astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.05  # the colour match from an eighth of the texels: near the same
    assert np.array_equal(image.reshape(-1, 3)[r.texel][full], reference.reshape(-1, 3)[r.texel][full])


def test_the_mesh_stage_prepares_the_adjust_with_its_final_surface(tmp_path):
    from orbitmesh.mesh import field_to_glb

    ax = np.linspace(-1, 1, 48)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    density = (0.6 - np.sqrt(x * x + y * y + z * z)).astype(np.float32)
    seen = {}

    class Adjust:
        def prepare(self, vertices, faces):
            seen["prepare"] = (vertices.copy(), faces.copy())

        def __call__(self, uvm, raster, points, colors):
            seen["call"] = uvm
            return colors

    field_to_glb(density, lambda p: np.full((len(p), 3), 0.5, np.float32), bbox=(-1, 1), threshold=0.0,
                 target_faces=800, texture_size=128, out_path=tmp_path / "m.glb", texel_adjust=Adjust())
    vertices, faces = seen["prepare"]
    uvm = seen["call"]
    # the same triangles: the UV mesh's vertices are the prepared ones, split along seams
    assert len(faces) == len(uvm.faces) and np.array_equal(uvm.vertices, vertices[uvm.vmap])
    triangles = np.sort(vertices[faces].reshape(-1, 9), 0)
    assert np.array_equal(triangles, np.sort(uvm.vertices[uvm.faces].reshape(-1, 9), 0))


# ----- silhouette carving -----------------------------------------------------------------------------------

def _sphere_field(resolution: int = 96, radius: float = 0.35, threshold: float = 5.0) -> np.ndarray:
    ax = np.linspace(-0.6, 0.6, resolution)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    return (threshold + 20.0 * (radius - np.sqrt(x * x + y * y + z * z))).astype(np.float32)


def _output_frame_camera() -> Camera:
    """The source camera in the pipeline's output frame: on -y, looking along +y, z up."""
    return Camera(look_at((0.0, -1.0, 0.0)), (FOCAL, FOCAL, 0.5, 0.5))


def _projection(density: np.ndarray, threshold: float, size: int) -> np.ndarray:
    from orbitmesh.mesh import extract_surface

    ex = extract_surface(density, threshold, bbox=(-0.6, 0.6), target_faces=None, close_boundary=True)
    return silhouettes(ex.vertices, ex.faces, [_output_frame_camera()], size)[0].numpy()


def _square(size: int, half: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 - 0.5
    return (np.abs(xx - c) < half) & (np.abs(yy - c) < half)


def test_sphere_carved_to_a_square_mask_matches_it_within_two_pixels():
    size, threshold = 128, 5.0
    density = _sphere_field(threshold=threshold)
    square = _square(size, 30)  # the sphere's disc (radius ~36 px) spills past the sides, misses the corners
    before = _projection(density, threshold, size)
    assert (before & ~square).sum() > 500 and (square & ~before).sum() > 100
    res = carve_density(density, threshold, (-0.6, 0.6), square, distance=1.0, focal=FOCAL)
    assert not res.skipped and res.iou_after > res.iou_before and res.filled_pixels > 0
    after = _projection(res.density, threshold, size)
    wrong = after ^ square
    from_edge = np.where(square, distance_transform_edt(square), distance_transform_edt(~square))
    assert from_edge[wrong].max() <= 2.0  # carved outside, filled inside: only the outline's own pixels differ
    assert wrong.sum() < 0.1 * square.sum()
    assert np.array_equal(density, _sphere_field(threshold=threshold))  # the input is left alone


def test_a_mask_with_a_hole_carves_the_hole_through():
    size, threshold = 128, 5.0
    density = _sphere_field(threshold=threshold)
    mask = _square(size, 30) & ~_square(size, 8)
    res = carve_density(density, threshold, (-0.6, 0.6), mask, distance=1.0, focal=FOCAL)
    after = _projection(res.density, threshold, size)
    assert not after[_square(size, 6)].any()  # see-through where the mask has its hole
    assert after[mask & ~_square(size, 10)].mean() > 0.97


def test_carving_is_skipped_with_a_warning_when_the_mask_disagrees():
    size, threshold = 128, 5.0
    density = _sphere_field(threshold=threshold)
    wrong = np.zeros((size, size), bool)
    wrong[:20, :20] = True  # a corner: not this object's outline
    res = carve_density(density, threshold, (-0.6, 0.6), wrong, distance=1.0, focal=FOCAL)
    assert res.skipped and res.density is not None and np.array_equal(res.density, density)
    assert "skipped" in res.warnings[0] and "IoU" in res.warnings[0]
    assert carve_density(density, threshold, (-0.6, 0.6), wrong, distance=1.0, focal=FOCAL,
                         config=CarveConfig(min_iou=0.0)).skipped is False


def test_in_place_carving_gives_the_same_grid_and_leaves_a_skipped_input_alone():
    size, threshold = 128, 5.0
    density = _sphere_field(threshold=threshold)
    mask = _square(size, 30) & ~_square(size, 8)
    copy = carve_density(density, threshold, (-0.6, 0.6), mask, distance=1.0, focal=FOCAL)
    grid = density.copy()
    res = carve_density(grid, threshold, (-0.6, 0.6), mask, distance=1.0, focal=FOCAL, inplace=True)
    assert res.density is grid and np.array_equal(grid, copy.density) and res.to_dict() == copy.to_dict()
    wrong = np.zeros((size, size), bool)
    wrong[:20, :20] = True
    grid = density.copy()
    res = carve_density(grid, threshold, (-0.6, 0.6), wrong, distance=1.0, focal=FOCAL, inplace=True)
    assert res.skipped and np.array_equal(grid, density)


def test_a_carve_that_would_remove_the_whole_object_is_undone():
    size, threshold = 128, 5.0
    density = _sphere_field(threshold=threshold)
    corner = np.zeros((size, size), bool)
    corner[:12, :12] = True  # nowhere near the sphere; told not to check agreement, and not to fill
    grid = density.copy()
    res = carve_density(grid, threshold, (-0.6, 0.6), corner, distance=1.0, focal=FOCAL,
                        config=CarveConfig(min_iou=0.0, fill=False), inplace=True)
    assert res.skipped and "whole object" in res.warnings[0]
    assert np.array_equal(grid, density) and res.density is not None and np.array_equal(res.density, density)


def test_the_recorded_silhouette_iou_after_is_the_carved_grids_own():
    """iou_after recounts only the pixels whose rays a change crossed: it must equal a full recount."""
    from orbitmesh.quality.silhouette import mask_at, silhouette

    size, threshold = 128, 5.0
    density = _sphere_field(threshold=threshold)
    for mask in (_square(size, 30), _square(size, 30) & ~_square(size, 8), _square(size, 38)):
        res = carve_density(density, threshold, (-0.6, 0.6), mask, distance=1.0, focal=FOCAL)
        covered, _, _ = silhouette(res.density, threshold, (-0.6, 0.6), distance=1.0, focal=FOCAL,
                                   size=res.coverage_size)
        want = mask_at(mask, res.coverage_size)
        assert res.iou_after == pytest.approx((covered & want).sum() / (covered | want).sum(), abs=1e-12)


@pytest.mark.parametrize("resolution", [40, 53])
def test_smoothing_the_changes_block_by_block_equals_smoothing_the_whole_grid_there(resolution):
    """Changes at the grid's corners and borders and inside, on a grid that is not a whole number of blocks."""
    from scipy.ndimage import gaussian_filter, maximum_filter

    from orbitmesh.quality.silhouette import SMOOTH_TRUNCATE, _smooth_changes

    rng = np.random.default_rng(resolution)
    grid = rng.normal(size=(resolution,) * 3).astype(np.float32)
    r = resolution - 1
    points = [(0, 0, 0), (r, r, r), (0, r // 2, r), (r // 2, r // 2, r // 2), (17, 16, 15), (1, 30, 2)]
    changed = np.array([np.ravel_multi_index(p, grid.shape) for p in points] +
                       list(rng.choice(grid.size, 40, replace=False)))
    out = grid.copy()
    idx, before = _smooth_changes(out, changed, 1.0)
    touched = np.zeros(grid.shape, bool)
    touched.reshape(-1)[changed] = True
    near = maximum_filter(touched, size=5)  # the Gaussian's radius: 2 cells
    want = np.where(near, gaussian_filter(grid, 1.0, truncate=SMOOTH_TRUNCATE), grid)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-6)
    assert np.array_equal(np.sort(idx), np.flatnonzero(near)) and np.array_equal(before, grid.reshape(-1)[idx])


def _soft_blob(resolution: int = 256, threshold: float = 5.0) -> np.ndarray:
    """A soft ellipsoid field like a triplane model's: its density ramps by the threshold over ~6 cells, where
    the carve's ramp takes 2."""
    ax = np.linspace(-0.6, 0.6, resolution)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    return (threshold + 4.0 * (0.33 - np.sqrt(x * x + (1.3 * y) ** 2 + z * z))).astype(np.float32)


def test_a_carved_soft_field_meshes_without_folds_and_decimates_closed():
    """The carve's and the fill's pixel-sized steps, and the slit where a fill slab met the model's surface,
    used to fold the coarse-to-fine marching cubes' triangles and make the fast decimation pinch the surface
    into non-manifold edges (sending it to its slow fallback) on a field like this one."""
    import fast_simplification

    from orbitmesh.mesh import clean_mesh, extract_surface
    from orbitmesh.mesh.decimate import bad_edges
    from orbitmesh.mesh.extract import trilinear

    threshold, size = 5.0, 512
    density = _soft_blob(threshold=threshold)
    # the blob's outline spills past the smaller square's sides; both squares' corners are filled
    for half, carved in ((120, True), (130, False)):
        res = carve_density(density, threshold, (-0.6, 0.6), _square(size, half), distance=1.0, focal=FOCAL)
        assert not res.skipped and res.iou_after > 0.96 and res.filled_pixels > 0
        assert (res.removed_fraction > 0) is carved
        ex = extract_surface(res.density, threshold, bbox=(-0.6, 0.6), target_faces=20000, close_boundary=True)
        assert ex.stride == 2  # the coarse-to-fine path
        v, f, _ = clean_mesh(ex.vertices, ex.faces, min_component_fraction=0.01)
        tri = v[f]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        _, grad = trilinear(res.density, (tri.mean(1) + 0.6) / 1.2 * 255)
        assert ((normal * -grad).sum(1) < 0).sum() == 0, half  # no face turned against the field (a fold)
        _, f2 = fast_simplification.simplify(v.astype(np.float32), f.astype(np.int32),
                                             target_reduction=1 - 20000 / len(f))
        assert bad_edges(f) == 0 and bad_edges(f2.astype(np.int32)) == 0, half


# ----- the pipeline -----------------------------------------------------------------------------------------

def test_input_photo_frames_the_full_resolution_cutout_like_the_encoder_image(object_image):
    from orbitmesh.pipeline.input_view import input_photo, photo_size
    from orbitmesh.pipeline.preprocess import preprocess_image

    pre = preprocess_image(object_image(2000), size=512)  # the object: 1200 px across, 1500 px framed
    assert photo_size(pre, 1024) == 1024 and photo_size(pre, 4096) > 1024 and photo_size(pre, 256) == 512
    view = input_photo(pre, 1024, _output_frame_camera())
    assert view.rgb.shape == (1024, 1024, 3) and view.mask.shape == (1024, 1024)
    small = view.mask.reshape(512, 2, 512, 2).mean(axis=(1, 3)) > 0.5
    encoder = np.asarray(pre.mask, bool)
    assert (small ^ encoder).sum() <= 0.01 * encoder.sum()  # the same framing, to a pixel


def test_a_model_with_its_own_framing_gets_its_mask_and_photo_framed_that_way(object_image):
    """TripoSR frames the object at 85 % of its input (``foreground_ratio``): the carve's mask and the photo
    follow the model's framing, not the preprocessing's 80 %."""
    from types import SimpleNamespace

    from orbitmesh.pipeline.input_view import input_photo, model_border, model_mask
    from orbitmesh.pipeline.preprocess import preprocess_image

    pre = preprocess_image(object_image(600), size=512)
    lrm, tsr = SimpleNamespace(), SimpleNamespace(foreground_ratio=0.85, background_grey=0.5)
    assert model_border(lrm, pre) == 0.2 and model_mask(lrm, pre) is not None
    assert np.array_equal(model_mask(lrm, pre), pre.mask)
    assert model_border(tsr, pre) == pytest.approx(0.15)

    def width(mask: np.ndarray) -> int:
        cols = np.flatnonzero(mask.any(axis=0))
        return int(cols[-1] - cols[0] + 1)

    assert abs(width(pre.mask) - 0.80 * 512) <= 2 and abs(width(model_mask(tsr, pre)) - 0.85 * 512) <= 2
    view = input_photo(pre, 512, _output_frame_camera(), model_border(tsr, pre))
    assert abs(width(view.mask > 0.5) - 0.85 * 512) <= 2


def test_switches_reach_their_stages(tmp_path, cpu_settings):
    from orbitmesh.models.registry import resolve_lrm_source
    from orbitmesh.pipeline import modes
    from orbitmesh.pipeline.request import GenerateRequest
    from orbitmesh.pipeline.stages import StageEnv, build_stages

    settings = cpu_settings(tmp_path)
    for mode in modes.MODES:
        for on in (True, False):
            req = GenerateRequest(image_path="x.png", mode=mode, input_texture=on, carve=on)
            env = StageEnv(req, settings, "cpu", None, resolve_lrm_source("tiny-random", settings.model_dir))
            by_name = {s.name: s for s in build_stages(env)}
            assert by_name[modes.CARVE].enabled is on  # quality mode carves too
            if mode == "fast":
                assert by_name[modes.MESH].input_texture is on


def test_generate_records_both_switches_and_what_they_did(tmp_path, sample_photo, small_request, cpu_settings):
    from orbitmesh.pipeline.generate import generate
    from orbitmesh.pipeline.request import GenerateRequest

    result = generate(GenerateRequest(image_path=sample_photo, seed=3, **small_request),
                      settings=cpu_settings(tmp_path))
    rec = json.loads((result.job_dir / "job.json").read_text())
    assert rec["settings"]["request"]["input_texture"] is True and rec["settings"]["request"]["carve"] is True
    assert rec["carve"]["enabled"] is True and "iou_before" in rec["carve"]
    # random weights: the blob has nothing to do with the photo's outline, so carving is refused, loudly
    assert rec["carve"]["skipped"] and any("carving skipped" in w for w in result.warnings)
    painted = rec["stats"]["mesh"]["input_texture"]
    assert painted["enabled"] and painted["painted_fraction"] > 0 and painted["photo_size"] >= 512


def test_both_switches_off_reproduce_the_previous_output_exactly(tmp_path, sample_photo, small_request,
                                                                 cpu_settings, monkeypatch):
    """Off, the carve stage and the mesh stage's painting change nothing: the same GLB bytes as the pipeline
    without them (the stage list before this feature, the mesh stage without the input texture)."""
    from orbitmesh.pipeline import modes
    from orbitmesh.pipeline.generate import generate
    from orbitmesh.pipeline.request import GenerateRequest

    request = dict(image_path=sample_photo, seed=5, **small_request)
    off = generate(GenerateRequest(**request, input_texture=False, carve=False), settings=cpu_settings(tmp_path / "a"))
    assert list(off.timings) == ["01-preprocess", "02-lrm", "03-grid_query", "04-carve", "05-mesh", "06-export"]
    fast = modes.MODES["fast"]
    monkeypatch.setitem(modes.MODES, "fast", modes.ModeInfo(fast.name, fast.label, fast.description,
                                                            tuple(s for s in fast.stages if s != modes.CARVE)))
    previous = generate(GenerateRequest(**request, input_texture=False), settings=cpu_settings(tmp_path / "b"))
    assert "04-carve" not in previous.timings
    assert off.glb_path.read_bytes() == previous.glb_path.read_bytes()
    on = generate(GenerateRequest(**request), settings=cpu_settings(tmp_path / "c"))
    assert on.glb_path.read_bytes() != off.glb_path.read_bytes()  # (and on, the photo does change it)


@pytest.mark.parametrize("flags, expected", [([], (True, True)), (["--no-input-texture"], (False, True)),
                                             (["--no-carve"], (True, False)),
                                             (["--no-input-texture", "--no-carve"], (False, False))])
def test_cli_switch_flags(flags, expected):
    from orbitmesh.cli import build_parser
    from orbitmesh.cli.common import request_settings_from_args

    values = request_settings_from_args(build_parser().parse_args(["generate", "in.png", *flags]))
    assert (values["input_texture"], values["carve"]) == expected


def test_cli_has_only_the_off_flags_and_the_request_checks_bools():
    from orbitmesh.cli import build_parser
    from orbitmesh.errors import InputError
    from orbitmesh.pipeline.request import GenerateRequest, cli_flag

    assert cli_flag("input_texture") == "--no-input-texture" and cli_flag("carve") == "--no-carve"
    assert cli_flag("mc_resolution") == "--mc-resolution"
    for flag in ("--input-texture", "--carve", "--no-input-texture=1"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["generate", "in.png", flag])
    for bad in (0, 1, "false", None):
        with pytest.raises(InputError, match="carve must be true or false"):
            GenerateRequest.from_settings({"carve": bad})
    assert GenerateRequest.from_settings({"carve": False, "input_texture": False}).carve is False
