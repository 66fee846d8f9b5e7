"""Writers: textured GLB, vertex-colour GLB, OBJ + MTL + PNG. All atomic.

The field's world is z-up (the LRM's convention); glTF and OBJ are y-up, so every writer
maps (x, y, z) -> (x, z, -y): a proper rotation, so winding and outward normals survive.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from orbitmesh import __version__
from orbitmesh.atomic import atomic_path

Z_UP_TO_Y_UP = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float32)  # rows: new x, y, z

GL_FLOAT, GL_UNSIGNED_INT, GL_UNSIGNED_BYTE = 5126, 5125, 5121
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


def to_y_up(xyz: np.ndarray) -> np.ndarray:
    """(N, 3) z-up -> (N, 3) float32 y-up: (x, y, z) -> (x, z, -y)."""
    return np.ascontiguousarray(np.asarray(xyz, np.float32) @ Z_UP_TO_Y_UP.T)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (fast compression: the GLB is not the place to save 10%)."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


class _GLBBuilder:
    def __init__(self) -> None:
        self.bin = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        self.bin += b"\0" * (-len(self.bin) % 4)
        v = {"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)}
        if target is not None:
            v["target"] = target
        self.bin += data
        self.views.append(v)
        return len(self.views) - 1

    def accessor(self, arr: np.ndarray, kind: str, target: int, *, minmax: bool = False,
                 normalized: bool = False) -> int:
        ctype = {np.dtype(np.float32): GL_FLOAT, np.dtype(np.uint32): GL_UNSIGNED_INT,
                 np.dtype(np.uint8): GL_UNSIGNED_BYTE}[arr.dtype]
        acc = {"bufferView": self.view(np.ascontiguousarray(arr).tobytes(), target), "componentType": ctype,
               "count": int(arr.shape[0]), "type": kind}
        if normalized:
            acc["normalized"] = True
        if minmax:
            a = arr.reshape(arr.shape[0], -1)
            acc["min"] = a.min(axis=0).tolist()
            acc["max"] = a.max(axis=0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def write(self, path: str | Path, gltf: dict) -> None:
        gltf["bufferViews"] = self.views
        gltf["accessors"] = self.accessors
        self.bin += b"\0" * (-len(self.bin) % 4)
        gltf["buffers"] = [{"byteLength": len(self.bin)}]
        js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
        js += b" " * (-len(js) % 4)
        total = 12 + 8 + len(js) + 8 + len(self.bin)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(struct.pack("<4sII", b"glTF", 2, total))
            fh.write(struct.pack("<I4s", len(js), b"JSON") + js)
            fh.write(struct.pack("<I4s", len(self.bin), b"BIN\0"))
            fh.write(self.bin)


def _geometry(b: _GLBBuilder, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray) -> dict:
    attrs = {"POSITION": b.accessor(to_y_up(vertices), "VEC3", ARRAY_BUFFER, minmax=True),
             "NORMAL": b.accessor(_unit(to_y_up(normals)), "VEC3", ARRAY_BUFFER)}
    indices = b.accessor(np.ascontiguousarray(faces, np.uint32).reshape(-1), "SCALAR", ELEMENT_ARRAY_BUFFER)
    return {"attributes": attrs, "indices": indices, "mode": 4}


def _unit(n: np.ndarray) -> np.ndarray:
    n = n.astype(np.float64)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    return n.astype(np.float32)


def _document(name: str, primitive: dict, material: dict) -> dict:
    primitive["material"] = 0
    return {"asset": {"version": "2.0", "generator": f"OrbitMesh {__version__}"},
            "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": name}],
            "meshes": [{"name": name, "primitives": [primitive]}], "materials": [material]}


def write_glb(path: str | Path, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
              uvs: np.ndarray, texture: np.ndarray, *, name: str = "orbitmesh") -> Path:
    """Textured GLB (glTF 2.0): one mesh, one PBR material (base colour texture, metallic 0,
    roughness 1), normals and UVs. vertices/normals (K, 3) z-up world, faces (M, 3),
    uvs (K, 2) in [0, 1] with v down the image, texture (H, W, 3) uint8 sRGB."""
    b = _GLBBuilder()
    prim = _geometry(b, vertices, faces, normals)
    prim["attributes"]["TEXCOORD_0"] = b.accessor(np.asarray(uvs, np.float32), "VEC2", ARRAY_BUFFER)
    image_view = b.view(encode_png(texture))
    material = {"name": f"{name}_material", "pbrMetallicRoughness": {
        "baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0}}
    doc = _document(name, prim, material)
    doc["images"] = [{"bufferView": image_view, "mimeType": "image/png", "name": f"{name}_basecolor"}]
    doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
    doc["textures"] = [{"sampler": 0, "source": 0}]
    b.write(path, doc)
    return Path(path)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def write_vertex_color_glb(path: str | Path, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                           colors: np.ndarray, *, name: str = "orbitmesh") -> Path:
    """Preview GLB with per-vertex colours (COLOR_0, linear as glTF requires; ``colors`` (N, 3)
    are sRGB in [0, 1]) and a white metallic 0 / roughness 1 material."""
    b = _GLBBuilder()
    prim = _geometry(b, vertices, faces, normals)
    rgba = np.ones((len(colors), 4), np.float32)
    rgba[:, :3] = srgb_to_linear(np.clip(colors, 0.0, 1.0))
    prim["attributes"]["COLOR_0"] = b.accessor(rgba, "VEC4", ARRAY_BUFFER)
    material = {"name": f"{name}_material", "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 1.0}}
    b.write(path, _document(name, prim, material))
    return Path(path)


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
              uvs: np.ndarray, texture: np.ndarray, *, name: str = "orbitmesh") -> list[Path]:
    """OBJ + MTL + PNG side by side (``x.obj``, ``x.mtl``, ``x.png``), y-up, OBJ's v-up UVs.
    Returns the three paths. The OBJ is written last so it never names a missing file."""
    path = Path(path)
    mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
    try:
        _write_obj_files(path, mtl, png, vertices, faces, normals, uvs, texture, name)
    except BaseException:
        for p in (mtl, png):  # the OBJ is written last, so it never exists here
            p.unlink(missing_ok=True)
        raise
    return [path, mtl, png]


def _write_obj_files(path: Path, mtl: Path, png: Path, vertices, faces, normals, uvs, texture, name: str) -> None:
    with atomic_path(png) as tmp:
        tmp.write_bytes(encode_png(texture, compress_level=6))
    mtl_text = (f"newmtl {name}_material\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nNs 0\nillum 1\n"
                f"map_Kd {png.name}\n")
    with atomic_path(mtl) as tmp:
        tmp.write_text(mtl_text)
    v, n = to_y_up(vertices), _unit(to_y_up(normals))
    uv = np.asarray(uvs, np.float64).copy()
    uv[:, 1] = 1.0 - uv[:, 1]
    f = np.asarray(faces, np.int64) + 1
    buf = io.StringIO()
    buf.write(f"# OrbitMesh {__version__}\nmtllib {mtl.name}\no {name}\n")
    np.savetxt(buf, v, fmt="v %.6f %.6f %.6f")
    np.savetxt(buf, uv, fmt="vt %.6f %.6f")
    np.savetxt(buf, n, fmt="vn %.5f %.5f %.5f")
    buf.write(f"usemtl {name}_material\n")
    np.savetxt(buf, np.repeat(f, 3, axis=1), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
