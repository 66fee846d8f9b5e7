"""GLB / vertex-colour GLB / OBJ exports: round trips, Khronos validator, Y-up, material."""

from __future__ import annotations

import numpy as np
import pytest

from orbitmesh.mesh import field_to_glb, to_y_up
from orbitmesh.mesh.demo import positional_color, sphere_torus_field


def accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = {5126: np.float32, 5125: np.uint32, 5121: np.uint8}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    start = view["byteOffset"] + acc.get("byteOffset", 0)
    return np.frombuffer(binary, dtype, acc["count"] * width, start).reshape(acc["count"], width)


@pytest.fixture(scope="module")
def field():
    return sphere_torus_field(96)


@pytest.fixture(scope="module")
def glb(field, tmp_path_factory):
    out = tmp_path_factory.mktemp("glb") / "shape.glb"
    return out, field_to_glb(field, positional_color, threshold=0.0, target_faces=3000, texture_size=256, out_path=out)


def test_glb_round_trip_and_validator(glb, validate_glb):
    import trimesh

    out, stats = glb
    report = validate_glb(out)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    mesh = trimesh.load(out, force="mesh", process=False)
    assert len(mesh.faces) == stats.faces and len(mesh.vertices) == stats.vertices
    assert abs(stats.faces - 3000) <= 150
    assert mesh.visual.uv.shape == (stats.vertices, 2)
    assert mesh.visual.material.baseColorTexture.size == (256, 256)
    assert set(stats.timings) == {"extract", "clean", "decimate", "normals", "uv", "bake", "export"}
    assert stats.seconds_total == pytest.approx(sum(stats.timings.values()))


def test_glb_content_is_y_up_pbr_with_normals(glb, read_glb):
    out, _ = glb
    doc, _ = read_glb(out)
    prim = doc["meshes"][0]["primitives"][0]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(prim["attributes"])
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 1.0 and "baseColorTexture" in pbr
    assert doc["images"][0]["mimeType"] == "image/png" and len(doc["meshes"]) == 1
    pos = doc["accessors"][prim["attributes"]["POSITION"]]
    # the torus (radius 0.78 in x/y) lies flat and the sphere sits on top (z-up world top 0.65 -> +y)
    assert pos["max"][1] == pytest.approx(0.65, abs=0.01) and pos["min"][1] == pytest.approx(-0.53, abs=0.01)
    assert pos["max"][0] == pytest.approx(0.78, abs=0.01) and pos["max"][2] == pytest.approx(0.78, abs=0.01)


def test_normals_point_outward_after_export(glb):
    import trimesh

    out, _ = glb
    mesh = trimesh.load(out, force="mesh", process=False)
    n = np.asarray(mesh.vertex_normals)
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-4)
    top = np.asarray(mesh.vertices)[:, 1].argmax()  # the sphere's top point faces +y
    assert n[top, 1] > 0.99
    assert np.allclose(np.cross(np.eye(3)[0], np.eye(3)[1]), np.eye(3)[2])  # right-handed sanity
    assert np.allclose(to_y_up(np.array([[0.0, 0.0, 1.0]])), [[0.0, 1.0, 0.0]])


def test_vertex_colour_preview(field, tmp_path, validate_glb, read_glb):
    import trimesh

    out = tmp_path / "preview.glb"
    stats = field_to_glb(field, positional_color, threshold=0.0, target_faces=3000, out_path=out, vertex_colors=True)
    assert validate_glb(out)["issues"]["numErrors"] == 0
    assert "uv" not in stats.timings and stats.texture_size == 0
    doc, binary = read_glb(out)
    attrs = doc["meshes"][0]["primitives"][0]["attributes"]
    assert "COLOR_0" in attrs and "TEXCOORD_0" not in attrs and "images" not in doc
    mesh = trimesh.load(out, force="mesh", process=False)
    assert len(mesh.faces) == stats.faces
    # COLOR_0 is linear: compare against the sRGB colour function converted to linear
    from orbitmesh.mesh.export import srgb_to_linear

    pos = accessor(doc, binary, attrs["POSITION"]).astype(np.float64)
    world = pos @ np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)  # file y-up -> world z-up
    expected = srgb_to_linear(positional_color(world.astype(np.float32)))
    got = accessor(doc, binary, attrs["COLOR_0"])[:, :3]
    assert np.abs(got - expected).max() < 1e-5


def test_obj_mtl_png(field, tmp_path):
    import trimesh

    out = tmp_path / "shape.obj"
    stats = field_to_glb(field, positional_color, threshold=0.0, target_faces=3000, texture_size=256, out_path=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shape.mtl", "shape.obj", "shape.png"]
    assert "map_Kd shape.png" in (tmp_path / "shape.mtl").read_text()
    mesh = trimesh.load(out, force="mesh", process=False)
    assert len(mesh.faces) == stats.faces
    assert mesh.visual.material.image.size == (256, 256)
    assert mesh.bounds[1][1] == pytest.approx(0.65, abs=0.01)  # y-up as well
