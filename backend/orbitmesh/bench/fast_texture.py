"""Fast mode with and without the input-view texture and the silhouette carving, on held-out procedural objects.

``orbitmesh bench fast-texture [--count 20] [--seed 1000000] [--model M] [--json]``. Protocol: each
object (seeds S .. S+N-1, held out from training at S >= 1,000,000) is rendered from the exact canonical
source camera (no jitter) at 512 px, 2x supersampled, and saved as an RGBA PNG (straight colours, the
render's coverage as alpha). It goes through the fast pipeline (``generate``, default settings) with both
switches off ("before": ``input_texture=False, carve=False``) and then on ("after"), no recentring beyond
the pipeline's own. Each GLB is mapped back into the object's frame (below) and rendered with
:mod:`orbitmesh.quality.raster` at 256 px on white, 2x supersampled, unlit (texture colour), from the
source camera and from two views at azimuth +-30 degrees (elevation 0, distance 1.0, the source focal
length); the ground truth is the object's own sphere-traced render (:func:`orbitmesh.data.render.render_view`)
with the same cameras and supersampling (its shading is baked and view independent, like a texture).
PSNR over the whole image; silhouette IoU of the pixels whose coverage is above 0.5. Times are the
jobs' stage times summed (the model is loaded by an untimed warm-up job first). ``--each-switch`` also runs
each switch alone and splits the near views' error by where it falls (:func:`near_error_split`), under the
JSON key ``switches``.

Mapping back. The pipeline recentres the object (crop to its box, scale to 80 % of the frame), so the
model reconstructs a bigger, centred object. A GLB vertex is turned into the LRM frame, projected by
the source camera, the recentring is undone in the image (exactly, from ``job.json``'s bbox and
preprocessing config) and the point is put back on that pixel's ray at its depth relative to the
origin divided by the recentring scale: an exact inverse in the input view and a similarity, to first
order, around it.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import time
from pathlib import Path

import numpy as np

from orbitmesh.errors import InputError

PREVIEW_NAME = "orbitmesh-preview"
INPUT_SIZE = 512
VIEW_SIZE = 256
SUPERSAMPLE = 2
NEAR_AZIMUTHS = (-30.0, 30.0)
# each run: (input_texture, carve); "before" and "after" are the issue's, the two others each switch alone
SWITCHES = {"before": (False, False), "input_texture": (True, False), "carve": (False, True), "after": (True, True)}
KEYS = ("input_psnr_before", "input_psnr_after", "near_psnr_before", "near_psnr_after",
        "input_silhouette_iou_before", "input_silhouette_iou_after", "seconds_before", "seconds_after")


# ----- reading our GLBs ---------------------------------------------------------------------------------

def read_glb(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A GLB written by :func:`orbitmesh.mesh.export.write_glb` -> vertices (K, 3) float32 in the pipeline's
    output frame (z up), faces (M, 3) int64, uvs (K, 2) float32 (v down the image), texture (H, W, 3) uint8."""
    import io

    from PIL import Image

    data = Path(path).read_bytes()
    magic, _, total = struct.unpack("<4sII", data[:12])
    if magic != b"glTF" or total != len(data):
        raise InputError(f"{path} is not a GLB", fix="pass a .glb written by orbitmesh")
    n = struct.unpack("<I", data[12:16])[0]
    doc = json.loads(data[20:20 + n])
    blob = data[20 + n + 8:]

    def view(index: int) -> bytes:
        v = doc["bufferViews"][index]
        return blob[v.get("byteOffset", 0):v.get("byteOffset", 0) + v["byteLength"]]

    def accessor(index: int) -> np.ndarray:
        a = doc["accessors"][index]
        dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}[a["componentType"]]
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[a["type"]]
        return np.frombuffer(view(a["bufferView"]), dtype, a["count"] * width).reshape(a["count"], width)

    prim = doc["meshes"][0]["primitives"][0]
    y_up = accessor(prim["attributes"]["POSITION"]).astype(np.float32)
    vertices = np.stack([y_up[:, 0], -y_up[:, 2], y_up[:, 1]], -1)  # glTF y-up -> z-up: (x, -z, y)
    faces = accessor(prim["indices"]).astype(np.int64).reshape(-1, 3)
    uvs = accessor(prim["attributes"]["TEXCOORD_0"]).astype(np.float32)
    texture = np.asarray(Image.open(io.BytesIO(view(doc["images"][0]["bufferView"]))).convert("RGB"))
    return vertices, faces, uvs, texture


# ----- the GLB back in the object's frame -----------------------------------------------------------------

def recentring(record: dict) -> tuple[float, float, float, float]:
    """(sx, sy, ox, oy): preprocessed pixel = source pixel * s + o (continuous, pixel edges at integers),
    from a job record's preprocess bbox and config, exactly as :func:`orbitmesh.imaging.recentre.recentre`
    placed the crop."""
    pre = record["preprocess"]
    x0, y0, x1, y1 = pre["bbox"]
    size, border = pre["config"]["size"], pre["config"]["border_ratio"]
    bw, bh = x1 - x0, y1 - y0
    scale = size * (1.0 - border) / max(bw, bh)
    nw, nh = min(size, max(1, round(bw * scale))), min(size, max(1, round(bh * scale)))
    sx, sy = nw / bw, nh / bh
    return sx, sy, (size - nw) // 2 - x0 * sx, (size - nh) // 2 - y0 * sy


def to_object_frame(vertices: np.ndarray, record: dict, *, source_size: int, distance: float = 1.0,
                    focal: float = 0.75) -> np.ndarray:
    """(K, 3) output-frame GLB vertices -> the object's (LRM) frame, undoing the pipeline's recentring
    (see the module docstring). ``source_size``: the input image's width and height in pixels."""
    from orbitmesh.pipeline.reconstruct import lrm_points_from_output

    p = lrm_points_from_output(np.asarray(vertices, np.float64))
    size = record["preprocess"]["config"]["size"]
    sx, sy, ox, oy = recentring(record)
    depth = distance - p[:, 0]  # along the source camera's axis (it looks down -x from +x)
    u = (0.5 + focal * p[:, 1] / depth) * size  # preprocessed image, pixels (right = +y)
    v = (0.5 - focal * p[:, 2] / depth) * size  # (down = -z)
    us, vs = (u - ox) / sx / source_size, (v - oy) / sy / source_size  # normalised source image
    d = distance + (depth - distance) / math.sqrt(sx * sy)
    return np.stack([distance - d, (us - 0.5) * d / focal, -(vs - 0.5) * d / focal], -1).astype(np.float32)


def render_textured(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray, camera,
                    size: int, supersample: int = SUPERSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """Unlit render of a textured mesh on white: rgb (size, size, 3) float32 and coverage (size, size), box
    filtered from ``supersample`` x the size (bilinear texture lookups, perspective-correct UVs)."""
    import torch
    import torch.nn.functional as F

    from orbitmesh.quality.raster import rasterize

    hi = size * supersample
    v = torch.from_numpy(np.asarray(vertices, np.float32))
    f = torch.from_numpy(np.asarray(faces, np.int64))
    r = rasterize(v, f, camera, hi)
    m = r.mask.reshape(-1)
    rgb = torch.ones(hi * hi, 3)
    if bool(m.any()):
        face = r.face.reshape(-1)[m]
        uv = (r.bary.reshape(-1, 3)[m, :, None] * torch.from_numpy(uvs)[f[face]]).sum(1)  # (P, 2)
        tex = torch.from_numpy(np.asarray(texture, np.float32) / 255.0).permute(2, 0, 1)[None]
        grid = (uv * 2.0 - 1.0).view(1, 1, -1, 2)  # v down the image = grid y down
        rgb[m] = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
    rgb = rgb.view(size, supersample, size, supersample, 3).mean(dim=(1, 3))
    cover = m.float().view(size, supersample, size, supersample).mean(dim=(1, 3))
    return rgb.numpy(), cover.numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return 99.0 if mse <= 1e-10 else 10.0 * math.log10(1.0 / mse)


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


# ----- the benchmark ------------------------------------------------------------------------------------------

def input_png(shape, path: Path) -> None:
    """The object from the canonical source camera at INPUT_SIZE, 2x supersampled, as an RGBA PNG."""
    from PIL import Image

    from orbitmesh.data.render import SOURCE_INTRINSICS, source_camera

    view = _render(shape, source_camera(), INPUT_SIZE, SOURCE_INTRINSICS)
    rgb, alpha = view.rgb.numpy(), view.alpha.numpy()
    a = alpha[..., None]
    straight = np.where(a > 1e-4, (rgb - (1.0 - a)) / np.maximum(a, 1e-4), 1.0)  # un-composite from white
    rgba = np.concatenate([np.clip(straight, 0, 1), alpha[..., None]], -1)
    Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(path)


def _render(shape, c2w, size: int, intrinsics):
    from orbitmesh.data.render import render_view

    return render_view(shape, c2w, size, intrinsics, supersample=SUPERSAMPLE)


def eval_cameras(distance: float = 1.0, focal: float = 0.75) -> list:
    """The source view and the two near views, as (data c2w tensor, quality Camera) pairs."""
    from orbitmesh.data.render import orbit_camera
    from orbitmesh.quality.cameras import Camera

    out = []
    for az in (0.0, *NEAR_AZIMUTHS):
        c2w = orbit_camera(az, 0.0, distance)
        out.append((c2w, Camera(c2w.numpy().astype(np.float32), (focal, focal, 0.5, 0.5))))
    return out


def near_error_split(rgb: np.ndarray, cover: np.ndarray, truth_rgb: np.ndarray, truth_alpha: np.ndarray
                     ) -> tuple[float, float, float]:
    """One view's mean squared error (the PSNR's) split by where it falls: inside both silhouettes (colour), on
    the mesh only (the truth is background there) and on the truth only (the mesh is missing there)."""
    err = ((np.clip(rgb, 0, 1) - np.clip(truth_rgb, 0, 1)) ** 2).sum(-1) / (3 * rgb.shape[0] * rgb.shape[1])
    mesh, truth = cover > 0.5, truth_alpha > 0.5
    return float(err[mesh & truth].sum()), float(err[mesh & ~truth].sum()), float(err[~mesh & truth].sum())


def score_glb(glb: Path, record: dict, truths: list, cameras: list) -> dict[str, float]:
    """One GLB's scores: ``input_psnr``, ``near_psnr`` (the mean over the near views), ``input_silhouette_iou``,
    ``near_silhouette_iou`` and the near views' mean squared error split by :func:`near_error_split`
    (``near_mse_both``, ``near_mse_mesh_only``, ``near_mse_truth_only``; their mean over the views)."""
    v, f, uv, tex = read_glb(glb)
    v = to_object_frame(v, record, source_size=INPUT_SIZE)
    views = []
    for (_, cam), truth in zip(cameras, truths):
        rgb, cover = render_textured(v, f, uv, tex, cam, VIEW_SIZE)
        t_rgb, t_alpha = truth.rgb.numpy(), truth.alpha.numpy()
        views.append((psnr(rgb, t_rgb), silhouette_iou(cover, t_alpha), *near_error_split(rgb, cover, t_rgb, t_alpha)))
    near = np.mean(np.array(views[1:]), axis=0)
    return {"input_psnr": views[0][0], "near_psnr": float(near[0]), "input_silhouette_iou": views[0][1],
            "near_silhouette_iou": float(near[1]), "near_mse_both": float(near[2]),
            "near_mse_mesh_only": float(near[3]), "near_mse_truth_only": float(near[4])}


def run(*, model: str | None = None, count: int = 20, seed: int = 1_000_000, texture_size: int = 1024,
        mc_resolution: int = 256, device: str = "cpu",
        output_dir: str | Path = "orbitmesh-output/bench-fast-texture", each_switch: bool = False) -> dict:
    """Score the fast pipeline before/after the input texture and the carving on ``count`` procedural objects
    from ``seed`` (see the module docstring); the input PNGs and both GLBs of every object stay in
    ``output_dir``. Returns the means (:data:`KEYS`) and ``objects`` [{seed, glb_before, glb_after}].
    ``each_switch``: also run each switch alone, and add ``switches``: for each of :data:`SWITCHES` the means
    of every :func:`score_glb` score and the seconds."""
    from orbitmesh.data.procedural import make_shape
    from orbitmesh.data.render import SOURCE_INTRINSICS
    from orbitmesh.jobs import JobFolder
    from orbitmesh.pipeline.generate import generate
    from orbitmesh.pipeline.request import GenerateRequest
    from orbitmesh.settings import load_settings

    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}", fix="e.g. --count 20")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}", fix="e.g. --seed 1000000")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings(device=device, output_dir=str(out / "jobs"))
    name = model or PREVIEW_NAME
    cameras = eval_cameras()

    def job(png: Path, texture: bool, carve: bool):
        request = GenerateRequest(image_path=str(png), model=name, mc_resolution=mc_resolution,
                                  texture_size=texture_size, input_texture=texture, carve=carve)
        result = generate(request, settings=settings)
        return result, JobFolder.open(result.job_dir).record

    runs = {tag: SWITCHES[tag] for tag in (SWITCHES if each_switch else ("before", "after"))}
    rows, objects, scores, warmed = [], [], {tag: [] for tag in runs}, False
    for s in range(seed, seed + count):
        shape = make_shape(s)
        png = out / f"{s}_input.png"
        input_png(shape, png)
        if not warmed:  # load the model outside the timings
            job(png, False, False)
            warmed = True
        truths = [_render(shape, c2w, VIEW_SIZE, SOURCE_INTRINSICS) for c2w, _ in cameras]
        row, paths = {}, {}
        for tag, (texture, carve) in runs.items():
            start = time.perf_counter()
            result, record = job(png, texture, carve)
            wall = time.perf_counter() - start
            glb = out / f"{s}_{tag}.glb"
            shutil.copyfile(result.glb_path, glb)
            score = score_glb(glb, record, truths, cameras)
            score["seconds"] = float(sum(result.timings.values())) if result.timings else wall
            scores[tag].append(score)
            if tag in ("before", "after"):
                paths[f"glb_{tag}"] = str(glb)
                row.update({f"{key}_{tag}": score[key] for key in
                            ("input_psnr", "near_psnr", "input_silhouette_iou", "seconds")})
        rows.append(row)
        objects.append({"seed": s, **paths})
    summary = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in KEYS}
    out_dict = {**summary, "objects": objects}
    if each_switch:
        out_dict["switches"] = {tag: {key: round(float(np.mean([sc[key] for sc in scores[tag]])), 6)
                                      for key in scores[tag][0]} for tag in runs}
    return out_dict


def format_table(result: dict) -> str:
    lines = [f"fast mode on {len(result['objects'])} held-out procedural objects: before (both switches off) "
             "-> after (input texture + carving)",
             f"{'input-view PSNR (dB)':<30} {result['input_psnr_before']:.2f} -> {result['input_psnr_after']:.2f}",
             f"{'near-view PSNR (dB, +-30 deg)':<30} {result['near_psnr_before']:.2f} -> "
             f"{result['near_psnr_after']:.2f}",
             f"{'input-view silhouette IoU':<30} {result['input_silhouette_iou_before']:.4f} -> "
             f"{result['input_silhouette_iou_after']:.4f}",
             f"{'seconds per asset':<30} {result['seconds_before']:.2f} -> {result['seconds_after']:.2f} "
             f"({result['seconds_after'] - result['seconds_before']:+.2f})"]
    if "switches" in result:
        lines.append("each switch alone (near-view mean squared error x 1e3 split: inside both silhouettes, on the "
                     "mesh only, on the truth only):")
        lines.append(f"{'run':<15} {'input PSNR':>10} {'near PSNR':>10} {'near IoU':>9} {'both':>7} {'mesh':>7} "
                     f"{'truth':>7} {'seconds':>8}")
        for tag, sc in result["switches"].items():
            lines.append(f"{tag:<15} {sc['input_psnr']:>10.2f} {sc['near_psnr']:>10.2f} "
                         f"{sc['near_silhouette_iou']:>9.3f} {sc['near_mse_both'] * 1e3:>7.2f} "
                         f"{sc['near_mse_mesh_only'] * 1e3:>7.2f} {sc['near_mse_truth_only'] * 1e3:>7.2f} "
                         f"{sc['seconds']:>8.2f}")
    if result["objects"]:
        lines.append(f"GLBs: {Path(result['objects'][0]['glb_before']).parent}")
    return "\n".join(lines)
