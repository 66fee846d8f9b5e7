"""The fast decimation's second, gentler pass before the slow pymeshlab fallback."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from orbitmesh.mesh import extract_surface

decimate_module = importlib.import_module("orbitmesh.mesh.decimate")


@pytest.fixture()
def closed_sphere() -> tuple[np.ndarray, np.ndarray]:
    ax = np.linspace(-1, 1, 40)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    ex = extract_surface((0.6 - np.sqrt(x * x + y * y + z * z)).astype(np.float32), 0.0, bbox=(-1, 1),
                         target_faces=None)
    assert decimate_module.bad_edges(ex.faces) == 0 and len(ex.faces) > 2000
    return ex.vertices, ex.faces


def _pinching_first_pass(monkeypatch, gentle_pinches: bool) -> list[float]:
    """fast-simplification whose default pass leaves an open edge (and the gentle one too, if asked)."""
    import fast_simplification

    real = fast_simplification.simplify
    calls: list[float] = []

    def simplify(points, triangles, target_reduction=None, agg=7.0, **kwargs):
        calls.append(agg)
        v, f = real(points, triangles, target_reduction=target_reduction, agg=agg, **kwargs)
        return (v, f[:-1]) if agg == decimate_module.FAST_AGGRESSIVENESS or gentle_pinches else (v, f)

    monkeypatch.setattr(fast_simplification, "simplify", simplify)
    return calls


def test_a_pinched_first_pass_is_redone_gently_without_pymeshlab(monkeypatch, closed_sphere):
    calls = _pinching_first_pass(monkeypatch, gentle_pinches=False)

    def no_pymeshlab(*args):
        raise AssertionError("the pymeshlab fallback ran although the gentle pass kept the surface closed")

    monkeypatch.setattr(decimate_module, "_decimate_pymeshlab", no_pymeshlab)
    v, f = decimate_module.decimate(*closed_sphere, 500)
    assert calls == [decimate_module.FAST_AGGRESSIVENESS, decimate_module.RETRY_AGGRESSIVENESS]
    assert decimate_module.bad_edges(f) == 0 and abs(len(f) - 500) <= 2 and f.dtype == np.int32


def test_pymeshlab_still_repairs_what_both_fast_passes_pinched(monkeypatch, closed_sphere):
    calls = _pinching_first_pass(monkeypatch, gentle_pinches=True)
    fallback = []

    def fake_pymeshlab(vertices, faces, target):
        fallback.append(target)
        return vertices, faces  # closed: fewer bad edges than either fast pass

    monkeypatch.setattr(decimate_module, "load_pymeshlab", lambda: object())
    monkeypatch.setattr(decimate_module, "_decimate_pymeshlab", fake_pymeshlab)
    v, f = decimate_module.decimate(*closed_sphere, 500)
    assert len(calls) == 2 and fallback == [500] and decimate_module.bad_edges(f) == 0
