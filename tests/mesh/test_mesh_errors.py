"""Mesh stage bad inputs, cancellation and native crashes: clear errors, no partial files."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from orbitmesh.errors import InputError, JobCancelled, OrbitMeshError
from orbitmesh.mesh import field_to_glb, unwrap_uv
from orbitmesh.mesh.demo import positional_color, sphere_torus_field
from orbitmesh.mesh.isolate import ChildCrashed, call_isolated, can_fork

R = 48


@pytest.fixture
def ball(sphere_field) -> np.ndarray:
    """A radius-0.6 sphere on the R^3 grid: a field field_to_glb accepts."""
    return sphere_field(res=R)


def with_nan(a: np.ndarray, value: float) -> np.ndarray:
    a = a.copy()
    a[5, 6, 7] = value
    return a


# case -> (the field, built with the sphere_field fixture; the error message)
BAD_FIELDS = {
    "empty": (lambda sphere: np.full((R, R, R), -1.0, np.float32), "no surface"),
    "nan": (lambda sphere: with_nan(sphere(res=R), np.nan), "non-finite"),
    "inf": (lambda sphere: with_nan(sphere(res=R), np.inf), "non-finite"),
    "touches_bbox": (lambda sphere: sphere(r=1.2, res=R), "touches the bounding box"),
    "tiny_2x2x2": (lambda sphere: np.array([[[1, -1], [-1, -1]], [[-1, -1], [-1, -1]]], np.float32), "too small"),
    "non_cubic": (lambda sphere: np.zeros((R, R, R // 2), np.float32), "must be cubic"),
    "not_3d": (lambda sphere: np.zeros((R, R), np.float32), "3-D"),
}


def assert_nothing_written(folder):
    assert list(folder.iterdir()) == [], "a failed run must leave no file (or temp file) behind"


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_bad_fields_get_clear_errors_and_no_file(tmp_path, case, sphere_field):
    make, match = BAD_FIELDS[case]
    density = make(sphere_field)
    out = tmp_path / "x.glb"
    with pytest.raises(InputError, match=match) as info:
        field_to_glb(density, positional_color, threshold=0.0, target_faces=1000, texture_size=64, out_path=out)
    assert isinstance(info.value, ValueError) and info.value.fix  # every error says how to fix it
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("color_fn, match", [
    (lambda p: p[:, :2], "shape"),
    (lambda p: np.full((len(p), 3), np.nan, np.float32), "NaN"),
    (lambda p: np.zeros(len(p)), "shape"),
    ("red", "callable"),
])
def test_bad_colour_functions_are_rejected_before_any_work(tmp_path, color_fn, match, ball):
    with pytest.raises(InputError, match=match):
        field_to_glb(ball, color_fn, threshold=0.0, target_faces=1000, texture_size=64, out_path=tmp_path / "x.glb")
    assert_nothing_written(tmp_path)


def test_colour_function_failing_only_on_the_surface_leaves_no_file(tmp_path, ball):
    def color(p):  # fine on the probe, NaN on real surface points
        c = positional_color(p)
        c[np.linalg.norm(p, axis=1) > 0.3] = np.nan
        return c

    with pytest.raises(InputError, match="NaN"):
        field_to_glb(ball, color, threshold=0.0, target_faces=1000, texture_size=64, out_path=tmp_path / "x.glb")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"target_faces": 0}, "target_faces"), ({"texture_size": 5}, "texture_size"),
    ({"out_path": "x.fbx"}, "unsupported output format"), ({"bbox": (1, -1)}, "bbox"),
    ({"threshold": float("nan")}, "threshold"),
])
def test_bad_options(tmp_path, kwargs, match, ball):
    args = {"threshold": 0.0, "target_faces": 1000, "texture_size": 64, "out_path": tmp_path / "x.glb"} | kwargs
    if not os.path.isabs(str(args["out_path"])):
        args["out_path"] = tmp_path / args["out_path"]
    with pytest.raises(InputError, match=match):
        field_to_glb(ball, positional_color, **args)
    assert_nothing_written(tmp_path)


def test_touching_bbox_can_be_closed_on_request(tmp_path, sphere_field):
    import trimesh

    out = tmp_path / "x.glb"
    stats = field_to_glb(sphere_field(r=1.2, res=R), positional_color, threshold=0.0, target_faces=1000,
                         texture_size=64, out_path=out, close_boundary=True)
    assert stats.boundary_closed and stats.warnings
    mesh = trimesh.load(out, force="mesh", process=False)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)  # weld the UV-seam copies back together
    assert mesh.is_watertight and mesh.volume > 0
    assert np.abs(mesh.bounds).max() <= 1.0 + 1e-5  # capped at the box, not beyond it


@pytest.mark.parametrize("cancel_at", ["extract", "decimate", "uv", "bake", "export"])
def test_cancel_between_steps_propagates_and_leaves_no_file(tmp_path, cancel_at, ball):
    seen = []

    def progress(stage, step, total, message=""):
        seen.append((stage, step, total, message))
        if message == cancel_at:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        field_to_glb(ball, positional_color, threshold=0.0, target_faces=1000, texture_size=64,
                     out_path=tmp_path / "x.glb", progress=progress)
    assert seen[-1][3] == cancel_at and all(s[0] == "mesh" and s[2] == 7 for s in seen)
    assert [s[1] for s in seen] == list(range(len(seen)))
    assert_nothing_written(tmp_path)


def _segfault(*args) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)  # runs in the child: kills the child only


@pytest.mark.skipif(not can_fork(), reason="needs fork")
def test_isolated_call_turns_a_segfault_into_an_exception():
    with pytest.raises(ChildCrashed, match="exit code -11"):
        call_isolated(_segfault)
    assert call_isolated(sum, [1, 2, 3]) == 6
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        call_isolated(divmod, 1, 0)


@pytest.mark.skipif(not can_fork(), reason="needs fork")
def test_xatlas_crash_is_retried_then_reported(monkeypatch):
    import orbitmesh.mesh.uv as uv

    def crashing(pieces, chart, pack):
        _segfault()

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    monkeypatch.setattr(uv, "run_xatlas", crashing)
    with pytest.raises(OrbitMeshError, match="UV unwrapping .xatlas. failed") as info:
        uv.unwrap_uv(v, f, texture_size=64, retries=2)
    assert info.value.fix
    monkeypatch.undo()
    res = unwrap_uv(v, f, texture_size=64)  # the parent process is fine and xatlas still works
    assert len(res.faces) == 4


def test_float64_and_list_bbox_inputs_work(tmp_path):
    stats = field_to_glb(sphere_torus_field(64).astype(np.float64), positional_color, threshold=0.0,
                         bbox=([-1, -1, -1], [1, 1, 1]), target_faces=2000, texture_size=128,
                         out_path=tmp_path / "x.glb")
    assert stats.faces == pytest.approx(2000, rel=0.05) and (tmp_path / "x.glb").stat().st_size > 1000
