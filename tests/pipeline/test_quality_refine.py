"""Quality mode: triplane refinement against orbit views, progress/cancel, the frame masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orbitmesh.errors import InputError, JobCancelled
from orbitmesh.pipeline.quality import frame_mask, output_points_from_lrm
from orbitmesh.pipeline.reconstruct import lrm_points_from_output
from orbitmesh.quality.refine import RefineConfig, make_targets, refine_triplane, render_views, silhouette_iou


@pytest.fixture(scope="module")
def setup():
    from orbitmesh.bench.refinement import degraded, fit_triplane, render_orbit
    from orbitmesh.data.procedural import make_shape

    torch.manual_seed(0)
    shape = make_shape(1_000_004)
    images, masks, cams = render_orbit(shape, 32)
    sdf, color = degraded(shape)
    field, planes = fit_triplane(sdf, color, channels=8, plane_size=32, steps=150, device="cpu", points=3072)
    return field, planes, make_targets(images, masks, cams, 32)


def test_refinement_raises_silhouette_agreement(setup):
    field, planes, targets = setup
    _, op0 = render_views(field, planes, targets, 16)
    before = silhouette_iou(op0, targets.mask)
    steps = []
    res = refine_triplane(field, planes, targets, RefineConfig(steps=40, rays_per_step=512, samples=12),
                          progress=lambda stage, i, n, msg="": steps.append((stage, i, n)))
    _, op1 = render_views(field, res.planes, targets, 16)
    after = silhouette_iou(op1, targets.mask)
    assert after > before + 0.05, (before, after)
    assert steps == [("refine", i, 40) for i in range(1, 41)]
    assert len(res.losses) == 40 and res.losses[-1] < res.losses[0]
    assert res.planes.shape == planes.shape and not res.planes.requires_grad
    assert not torch.equal(res.planes, planes)  # a copy was optimised; the input is untouched
    assert all(p.requires_grad for p in field.parameters())  # the frozen decoder is restored


def test_refinement_cancels_between_steps(setup):
    field, planes, targets = setup

    def progress(stage, step, total, message=""):
        if step == 3:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        refine_triplane(field, planes, targets, RefineConfig(steps=50, rays_per_step=64, samples=4), progress)
    assert all(p.requires_grad for p in field.parameters())


def test_refinement_rejects_bad_settings(setup):
    field, planes, targets = setup
    with pytest.raises(InputError, match="steps"):
        refine_triplane(field, planes, targets, RefineConfig(steps=-3))
    with pytest.raises(InputError, match="lr"):
        refine_triplane(field, planes, targets, RefineConfig(lr=float("nan")))
    with pytest.raises(InputError, match="planes"):
        refine_triplane(field, planes[0], targets, RefineConfig(steps=1))
    with pytest.raises(InputError, match="matching"):
        make_targets([np.ones((8, 8, 3))], [], [], 8)


def test_frame_mask_finds_the_object_on_white():
    rgb = np.ones((64, 64, 3), np.float32)
    rgb[20:44, 16:40] = [0.8, 0.3, 0.2]
    rgb[30:34, 26:30] = 0.99  # a near-white spot inside the object is not a hole
    rgb[2, 60] = 0.0  # a speck of dust
    m = frame_mask(rgb)
    assert m.dtype == np.float32 and m[20:44, 16:40].all() and m.sum() == 24 * 24
    assert not frame_mask(np.ones((16, 16, 3), np.float32)).any()


def test_frame_conversions_are_inverse():
    p = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_allclose(output_points_from_lrm(lrm_points_from_output(p)), p)
