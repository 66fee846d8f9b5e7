"""Per-texel bake: the texture reproduces an analytic colour field, seams included."""

from __future__ import annotations

import numpy as np
import pytest

from orbitmesh.mesh import bake_texture, dilate, field_to_glb, rasterize
from orbitmesh.mesh.demo import positional_color, sphere_torus_field


def bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample (H, W, 3) uint8 at (N, 2) glTF uvs (v down the rows) -> (N, 3) float in [0, 1]."""
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] * h - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(int), w - 2)
    y0 = np.minimum(np.floor(y).astype(int), h - 2)
    tx, ty = (x - x0)[:, None], (y - y0)[:, None]
    im = image.astype(np.float64) / 255.0
    top = im[y0, x0] * (1 - tx) + im[y0, x0 + 1] * tx
    bottom = im[y0 + 1, x0] * (1 - tx) + im[y0 + 1, x0 + 1] * tx
    return top * (1 - ty) + bottom * ty


def seam_faces(faces: np.ndarray) -> np.ndarray:
    """Faces with an edge on a UV chart border (an edge no other UV face shares)."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    key = e[:, 0].astype(np.int64) * (int(faces.max()) + 1) + e[:, 1]
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    border = (counts[inv] == 1).reshape(3, -1).any(axis=0)
    return np.flatnonzero(border)


@pytest.fixture(scope="module")
def demo_glb(tmp_path_factory):
    out = tmp_path_factory.mktemp("bake") / "demo.glb"
    stats = field_to_glb(sphere_torus_field(128), positional_color, threshold=0.0, target_faces=8000,
                         texture_size=512, out_path=out)
    return out, stats


def test_baked_texture_matches_colour_field_at_face_centroids(demo_glb):
    import trimesh

    out, stats = demo_glb
    mesh = trimesh.load(out, force="mesh", process=False)
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    assert image.shape == (512, 512, 3)
    uv = np.asarray(mesh.visual.uv, np.float64).copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # trimesh hands glTF uvs back flipped to OpenGL's v-up
    faces = np.asarray(mesh.faces)
    uv_centroid = uv[faces].mean(axis=1)
    # file is y-up; the colour field lives in the z-up world: (x, y, z) = (x, -z', y')
    p = np.asarray(mesh.vertices, np.float64)[faces].mean(axis=1)
    world = np.stack([p[:, 0], -p[:, 2], p[:, 1]], axis=1).astype(np.float32)
    err = np.abs(bilinear(image, uv_centroid) - positional_color(world))
    seams = seam_faces(faces)
    assert len(seams) > 0.05 * len(faces)  # there are seams to test
    assert err.mean() < 0.02
    assert err[seams].mean() < 0.02
    assert err.max() < 0.03  # no face, seam or not, reads a wrong colour (measured: 0.009)
    assert 0.45 < stats.uv_coverage < 0.95


def test_rasterize_single_triangle_counts_texels():
    uvs = np.array([[0.0, 0.0], [0.99, 0.0], [0.0, 0.99]], np.float32)
    r = rasterize(uvs, np.array([[0, 1, 2]]), 64, margin=0.0)
    # texel centres ((i + 0.5) / 64, (j + 0.5) / 64) with x + y <= 0.99: i + j <= 62, 63 * 64 / 2 texels
    assert int(r.inside.sum()) == 2016 and r.coverage == pytest.approx(2016 / 64 ** 2)
    rows, cols = np.divmod(r.texel, 64)
    assert (rows + cols <= 62).all()
    # barycentrics reproduce each texel centre
    centre = np.stack([(cols + 0.5) / 64, (rows + 0.5) / 64], axis=1)
    assert np.allclose(r.bary @ uvs.astype(np.float64), centre, atol=1e-5)


def test_bake_fills_every_texel_and_colours_inside_texels_exactly():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    uvs = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]], np.float32)
    color = lambda p: np.stack([p[:, 0], p[:, 1], np.full(len(p), 0.5, np.float32)], axis=1)
    image, r = bake_texture(v, np.array([[0, 1, 2]]), uvs, color, 32)
    rows, cols = np.divmod(r.texel[r.inside], 32)
    expected_x = ((cols + 0.5) / 32 - 0.1) / 0.8
    assert np.abs(image[rows, cols, 0] / 255.0 - expected_x).max() <= 0.5 / 255 + 1e-6
    assert (image[..., 2] == 128).all()  # dilation reached every texel


def test_bad_colour_function_output_is_rejected():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    uvs = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]], np.float32)
    with pytest.raises(ValueError, match="color_fn returned shape"):
        bake_texture(v, np.array([[0, 1, 2]]), uvs, lambda p: p[:, :2], 16)


def test_dilate_copies_nearest_filled_texel():
    image = np.zeros((4, 4, 3), np.uint8)
    image[0, 0] = 200
    filled = np.zeros((4, 4), bool)
    filled[0, 0] = True
    assert (dilate(image, filled) == 200).all()
