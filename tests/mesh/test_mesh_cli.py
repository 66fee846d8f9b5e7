"""CLI: `orbitmesh demo-mesh` and `orbitmesh bench postprocess`."""

from __future__ import annotations

import json


def test_demo_mesh_writes_a_valid_glb(tmp_path, run_orbitmesh, validate_glb, read_glb):
    out = tmp_path / "x.glb"
    proc = run_orbitmesh("demo-mesh", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "faces" in proc.stdout and "texture 1024^2" in proc.stdout
    assert validate_glb(out)["issues"]["numErrors"] == 0
    doc, _ = read_glb(out)
    assert doc["accessors"][doc["meshes"][0]["primitives"][0]["indices"]]["count"] // 3 >= 19000


def test_demo_mesh_bad_output_is_a_clear_error(tmp_path, run_orbitmesh):
    proc = run_orbitmesh("demo-mesh", "-o", str(tmp_path / "x.fbx"), "--resolution", "32")
    assert proc.returncode == 2 and "unsupported output format" in proc.stderr and "fix:" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_postprocess_json(run_orbitmesh):
    proc = run_orbitmesh("bench", "postprocess", "--resolution", "64", "--target-faces", "2000",
                         "--texture-size", "128", "--paths", "orbitmesh", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"seconds", "seconds_total", "faces", "uv_coverage", "runs"} <= set(result)
    assert set(result["seconds"]) == {"extract", "clean", "decimate", "normals", "uv", "bake", "export"}
    assert abs(result["faces"] - 2000) <= 100 and 0.3 < result["uv_coverage"] < 1.0
    assert result["seconds_total"] > 0
