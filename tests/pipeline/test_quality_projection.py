"""Quality mode: camera conventions, the view rasteriser, texture projection and camera alignment."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from orbitmesh.errors import InputError
from orbitmesh.pipeline.orbit import orbit_azimuths_deg
from orbitmesh.quality.align import AlignConfig, AlignFrame, align_cameras
from orbitmesh.quality.cameras import OrbitAlignment, fov_from_focal, lrm_source_camera, orbit_camera
from orbitmesh.quality.project import View, project_texture
from orbitmesh.quality.raster import project_points, rasterize, render_colors, silhouettes

AZIMUTHS = orbit_azimuths_deg(21)
FACE_COLORS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32)
FILL = np.array([0.5, 0.25, 0.75], np.float32)


def cube(h: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cube with one UV island per face in a 3x2 atlas (face k = axis k // 2, sign + then -)."""
    verts, faces, uvs = [], [], []
    for k, (axis, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)]):
        n = np.zeros(3)
        n[axis] = sign
        u = np.zeros(3)
        u[(axis + 1) % 3] = 1
        w = np.cross(n, u)
        base = len(verts)
        for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            verts.append(h * (n + a * u + b * w))
        cu, cv = (k % 3) / 3, (k // 3) / 2
        for a, b in ((0, 0), (1, 0), (1, 1), (0, 1)):
            uvs.append((cu + (0.05 + 0.9 * a) / 3, cv + (0.05 + 0.9 * b) / 2))
        faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return np.array(verts, np.float32), np.array(faces, np.int64), np.array(uvs, np.float32)


def face_color(points: np.ndarray) -> np.ndarray:
    axis = np.argmax(np.abs(points), axis=1)
    negative = points[np.arange(len(points)), axis] < 0
    return FACE_COLORS[axis * 2 + negative]


def face_patch(texture: np.ndarray, k: int) -> np.ndarray:
    """The interior texels of cube face k's UV cell (away from its borders)."""
    s = texture.shape[0]
    cu, cv = (k % 3) / 3, (k // 3) / 2
    return texture[int((cv + 0.15 / 2) * s):int((cv + 0.85 / 2) * s), int((cu + 0.15 / 3) * s):int((cu + 0.85 / 3) * s)]


def cube_views(elevation=lambda i: 30.0 if i % 2 else -30.0, size: int = 64) -> list[View]:
    v, f, _ = cube()
    views = []
    for i, az in enumerate(AZIMUTHS):
        cam = OrbitAlignment().camera(float(az), elevation(i))
        rgb, cover = render_colors(v, f, cam, size, face_color, supersample=2)
        views.append(View(rgb, cover, cam, name=f"orbit_{i:02d}", azimuth_deg=float(az)))
    return views


def fill_fn(points: np.ndarray) -> np.ndarray:
    return np.tile(FILL, (len(points), 1))


# -- conventions and rasteriser -------------------------------------------------------------

def test_orbit_camera_at_azimuth_zero_is_the_lrm_source_camera():
    src = lrm_source_camera()
    cam = orbit_camera(0.0, 0.0, 1.0, fov_from_focal(0.75))
    np.testing.assert_allclose(cam.c2w, [[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(cam.c2w, src.c2w, atol=1e-6)
    assert cam.intrinsics == pytest.approx(src.intrinsics)
    # the input view: image right is world +y, image up is world +z
    xy, depth = project_points(torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.0, 0.3]]), cam, 100)
    assert xy[0, 0] > 60 and abs(xy[0, 1] - 49.5) < 1e-3
    assert xy[1, 1] < 40 and abs(xy[1, 0] - 49.5) < 1e-3
    assert depth.tolist() == pytest.approx([1.0, 1.0])
    # azimuth grows counter-clockwise seen from above: 90 degrees is the +y side
    np.testing.assert_allclose(orbit_camera(90.0, 0.0, 2.0, 30.0).position, [0, 2, 0], atol=1e-6)


def test_projected_pixel_matches_the_renderer_ray():
    from orbitmesh.data.render import pixel_rays

    cam = OrbitAlignment().camera(37.0, 10.0)
    p = torch.tensor([[0.1, -0.2, 0.15]])
    xy, depth = project_points(p, cam, 200)
    u, v = (xy[:, 0] + 0.5) / 200, (xy[:, 1] + 0.5) / 200
    o, d = pixel_rays(torch.from_numpy(cam.c2w), cam.intrinsics, u, v)
    t = ((p - o) * d).sum(-1)
    assert torch.allclose(o + t[:, None] * d, p, atol=1e-5)


def test_rasterised_sphere_matches_ray_casting(mask_iou):
    import trimesh

    from orbitmesh.data.render import camera_rays, ray_sphere

    m = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    cam = OrbitAlignment().camera(30.0, 10.0)
    r = rasterize(np.asarray(m.vertices, np.float32), np.asarray(m.faces), cam, 96)
    o, d = camera_rays(torch.from_numpy(cam.c2w), cam.intrinsics, 96, 96)
    t_near, _, hit = ray_sphere(o, d, 0.5)
    hit = hit.view(96, 96)
    assert mask_iou(hit, r.mask) > 0.99
    axis_depth = (t_near * -(d @ torch.from_numpy(cam.c2w[:, 2]))).view(96, 96)
    both = hit & r.mask
    assert (r.depth[both] - axis_depth[both]).abs().median() < 1e-3
    # batched silhouettes agree with the per-view rasteriser
    sil = silhouettes(m.vertices, m.faces, [cam, OrbitAlignment().camera(200.0, -20.0)], 96)
    assert torch.equal(sil[0], r.mask)


# -- texture projection -------------------------------------------------------------------------

def test_projection_on_a_cube_reproduces_the_face_colours():
    v, f, uv = cube()
    res = project_texture(v, f, uv, cube_views(), 128, fill_fn=fill_fn)
    tex = res.texture.astype(np.float32) / 255.0
    for k in range(6):
        patch = face_patch(tex, k)
        assert np.abs(patch - FACE_COLORS[k]).max() < 0.02, (k, patch.reshape(-1, 3).mean(0))
    assert res.seen_fraction > 0.99
    assert res.views_used == [f"orbit_{i:02d}" for i in range(21)] and not res.warnings


def test_unseen_texels_come_from_the_fill_field():
    # at elevation 10 the radius-2 orbit stays below the top of a 0.8 cube: top and bottom are never seen
    v, f, uv = cube()
    res = project_texture(v, f, uv, cube_views(elevation=lambda i: 10.0), 128, fill_fn=fill_fn)
    tex = res.texture.astype(np.float32) / 255.0
    for k in range(4):
        assert np.abs(face_patch(tex, k) - FACE_COLORS[k]).max() < 0.02
    for k in (4, 5):
        assert np.abs(face_patch(tex, k) - FILL).max() < 0.01
        assert not face_patch(res.seen, k).any()


def test_frames_with_missing_or_empty_foreground_are_skipped_with_a_warning():
    v, f, uv = cube()
    views = cube_views()
    good = project_texture(v, f, uv, views[:-3], 96, fill_fn=fill_fn)
    # frame 18: empty mask, frame 19: no mask, frame 20: no image (a missing frame)
    bad = [View(views[18].rgb, np.zeros_like(views[18].mask), views[18].camera, "orbit_18", azimuth_deg=0.0),
           View(views[19].rgb, None, views[19].camera, "orbit_19"),
           View(None, views[20].mask, views[20].camera, "orbit_20")]
    with pytest.warns(UserWarning, match="orbit_18 has an empty foreground"):
        res = project_texture(v, f, uv, views[:-3] + bad, 96, fill_fn=fill_fn)
    assert res.views_skipped == ["orbit_18", "orbit_19", "orbit_20"]
    assert len(res.warnings) == 3 and "orbit_19 has no foreground mask" in res.warnings[1]
    assert np.array_equal(res.texture, good.texture)


def test_projection_rejects_bad_meshes():
    v, f, uv = cube()
    with pytest.raises(InputError, match="uvs"):
        project_texture(v, f, uv[:-1], cube_views(size=32)[:2], 32)
    with pytest.raises(InputError, match="non-empty"):
        project_texture(v, f[:0], uv, [], 32)


# -- camera alignment ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def object_mesh():
    from orbitmesh.bench.texture_projection import shape_mesh, textured_shape

    return shape_mesh(textured_shape(), 48, 1500)


def _frames(mesh, truth: OrbitAlignment, size: int = 96) -> list[AlignFrame]:
    cams = [truth.camera(float(a), 10.0) for a in AZIMUTHS]
    masks = silhouettes(*mesh, cams, size).numpy().astype(np.float32)
    return [AlignFrame(m, float(a), 10.0, f"orbit_{i:02d}") for i, (m, a) in enumerate(zip(masks, AZIMUTHS))]


@pytest.mark.parametrize("truth", [OrbitAlignment(azimuth_offset_deg=10.0, fov_deg=32.0),
                                   OrbitAlignment(elevation_offset_deg=-10.0)], ids=["azimuth", "elevation"])
def test_cameras_10_degrees_off_are_corrected(object_mesh, truth):
    frames = _frames(object_mesh, truth)
    res = align_cameras(*object_mesh, frames, OrbitAlignment(), AlignConfig(size=64, max_evaluations=70))
    al = res.alignment
    assert abs(al.azimuth_offset_deg - truth.azimuth_offset_deg) < 1.5
    assert abs(al.elevation_offset_deg - truth.elevation_offset_deg) < 2.0
    assert al.direction == 1
    assert abs(al.scale - truth.scale) < 0.03
    assert res.iou_after > 0.97 and res.iou_after > res.iou_before + 0.03


def test_alignment_skips_frames_without_foreground(object_mesh):
    frames = _frames(object_mesh, OrbitAlignment(azimuth_offset_deg=6.0), size=64)
    frames[3] = AlignFrame(np.zeros((64, 64), np.float32), frames[3].azimuth_deg, 10.0, "orbit_03")
    frames[4] = AlignFrame(None, frames[4].azimuth_deg, 10.0, "orbit_04")
    with pytest.warns(UserWarning, match="orbit_03 has an empty foreground"):
        res = align_cameras(*object_mesh, frames, config=AlignConfig(size=64, max_evaluations=40,
                                                                     fit_fov=False, fit_radius=False))
    assert res.skipped == ["orbit_03", "orbit_04"] and "orbit_03" not in res.frame_iou
    assert abs(res.alignment.azimuth_offset_deg - 6.0) < 1.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="no orbit frame"):
            align_cameras(*object_mesh, [AlignFrame(None, 0.0, 10.0)])
