"""Multi-view training data in memory: procedural objects (optionally cached on disk) or a folder
of user renders (images + ``cameras.json``), and random ray batches drawn from either.

A :class:`MultiViewData` holds N objects, each with one input image, V supervision views
(RGB + alpha) with exact cameras, and (procedural only) 3D points with ground-truth occupancy.

Folder format (one object per sub-folder, or the folder itself when it holds ``cameras.json``)::

    my_renders/
      chair/
        cameras.json
        input.png          # RGBA or RGB on white; the view from the LRM's source camera
        000.png 001.png ...

    cameras.json = {
      "input": "input.png",                     # optional, default: the first frame
      "frames": [
        {"file": "000.png",
         "c2w": [[r00, r01, r02, tx], [r10, r11, r12, ty], [r20, r21, r22, tz]],  # 3x4 or 4x4
         "fx": 0.75, "fy": 0.75, "cx": 0.5, "cy": 0.5}                          # normalised
      ]
    }

``c2w`` is Blender's ``camera.matrix_world`` (OpenGL axes: the camera looks down its -z, +y up),
in a world with +z up where the object fits in a sphere of radius ~0.5 around the origin;
``fx = focal_mm / sensor_width_mm`` for a square image. The input frame should come from the
canonical source camera at (1, 0, 0) looking at the origin (README has a Blender script).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from orbitmesh import atomic
from orbitmesh.data.procedural import (
    HELD_OUT_SEED_START,
    ProceduralConfig,
    make_sample,
    occupancy_points,
    surface_points,
)
from orbitmesh.data.render import pixel_rays, shade
from orbitmesh.errors import InputError

CACHE_VERSION = 2
@dataclass
class MultiViewData:
    """N objects. Shapes: ``input_rgb`` (N, S, S, 3) uint8; ``source_camera`` (N, 16) float32 (3x4
    c2w row-major + fx, fy, cx, cy); ``view_rgb`` (N, V, H, W, 3) uint8; ``view_alpha`` (N, V, H, W)
    uint8; ``view_c2w`` (N, V, 3, 4) float32; ``view_intrinsics`` (N, V, 4) float32; optional
    ``points`` (N, K, 3) float16 and ``occupancy`` (N, K) uint8, ``surface_points`` (N, K/2, 3) float16 and
    their shaded colour ``surface_rgb`` (N, K/2, 3) uint8; ``seeds`` (N,) int64 (-1: not procedural)."""

    input_rgb: torch.Tensor
    source_camera: torch.Tensor
    view_rgb: torch.Tensor
    view_alpha: torch.Tensor
    view_c2w: torch.Tensor
    view_intrinsics: torch.Tensor
    seeds: torch.Tensor
    points: torch.Tensor | None = None
    occupancy: torch.Tensor | None = None
    surface_points: torch.Tensor | None = None
    surface_rgb: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_rgb.shape[0]

    def with_capacity(self, capacity: int) -> "MultiViewData":
        """A copy with room for ``capacity`` objects (the first ``len(self)`` filled, the rest zeros),
        so a growing pool never reallocates; fill it with :meth:`write`."""
        def grow(t):
            if t is None:
                return None
            out = torch.zeros((capacity, *t.shape[1:]), dtype=t.dtype)
            out[: t.shape[0]] = t
            return out
        return MultiViewData(**{k: grow(v) for k, v in self.__dict__.items()})

    def write(self, start: int, other: "MultiViewData") -> None:
        """Copy ``other``'s objects into slots ``start ..`` (in place)."""
        for k, v in self.__dict__.items():
            if v is not None:
                v[start : start + len(other)] = getattr(other, k)

    # -- disk cache -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write an uncompressed ``.npz`` atomically."""
        arrays = {k: v.numpy() for k, v in self.__dict__.items() if v is not None}
        with atomic.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "MultiViewData":
        try:
            with np.load(path) as z:
                return cls(**{k: torch.from_numpy(z[k]) for k in z.files})
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot read the dataset cache {path}: {exc}",
                             fix="delete the file; it is rebuilt on the next run") from exc


# -- procedural data ------------------------------------------------------------------------------
def _camera16(c2w: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    return torch.cat([c2w.reshape(-1), intrinsics.reshape(-1)]).to(torch.float32)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def _render_one(args: tuple[int, ProceduralConfig, int]) -> dict[str, np.ndarray]:
    seed, config, n_points = args
    torch.set_num_threads(1)
    s = make_sample(seed, config)
    out = {
        "input_rgb": _to_u8(s.input.rgb).numpy(),
        "source_camera": _camera16(s.input.c2w, s.input.intrinsics).numpy(),
        "view_rgb": torch.stack([_to_u8(v.rgb) for v in s.views]).numpy(),
        "view_alpha": torch.stack([_to_u8(v.alpha) for v in s.views]).numpy(),
        "view_c2w": torch.stack([v.c2w for v in s.views]).numpy(),
        "view_intrinsics": torch.stack([v.intrinsics for v in s.views]).numpy(),
    }
    if n_points:
        pts, occ = occupancy_points(s.shape, n_points, np.random.default_rng([seed, 2]))
        out["points"] = pts.to(torch.float16).numpy()
        out["occupancy"] = occ.to(torch.uint8).numpy()
        surf = surface_points(s.shape, n_points // 2, np.random.default_rng([seed, 3]))
        out["surface_points"] = surf.to(torch.float16).numpy()
        out["surface_rgb"] = _to_u8(shade(s.shape, surf)).numpy()
    return out


def render_procedural(seeds: list[int], config: ProceduralConfig, n_points: int = 4096, workers: int = 1,
                      progress: Callable[[int, int], None] | None = None) -> MultiViewData:
    """Render every seed's object (``workers`` processes) into one in-memory dataset."""
    jobs = [(int(s), config, n_points) for s in seeds]
    results: list[dict] = []
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for r in pool.imap(_render_one, jobs, chunksize=4):
                results.append(r)
                if progress:
                    progress(len(results), len(jobs))
    else:
        for job in jobs:
            results.append(_render_one(job))
            if progress:
                progress(len(results), len(jobs))
    stacked = {k: torch.from_numpy(np.stack([r[k] for r in results])) for k in results[0]}
    return MultiViewData(seeds=torch.tensor(seeds, dtype=torch.int64), **stacked)


def cache_key(seed: int, count: int, config: ProceduralConfig, n_points: int) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "seed": seed, "count": count, "n_points": n_points,
                       "config": asdict(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def procedural_dataset(seed: int, count: int, config: ProceduralConfig | None = None, n_points: int = 4096,
                       cache_dir: str | Path | None = None, workers: int = 1,
                       progress: Callable[[int, int], None] | None = None) -> MultiViewData:
    """The fixed training set: objects ``seed .. seed + count - 1``, from the disk cache when present.

    Training seeds must stay below ``HELD_OUT_SEED_START`` (those are the benchmark's).
    """
    config = config or ProceduralConfig()
    if seed < 0 or count < 1 or seed + count > HELD_OUT_SEED_START:
        raise InputError(f"procedural training seeds {seed}..{seed + count - 1} are out of range",
                         fix=f"use seeds in [0, {HELD_OUT_SEED_START}); seeds >= {HELD_OUT_SEED_START} "
                             "are held out for `orbitmesh bench quality`")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"procedural-{cache_key(seed, count, config, n_points)}.npz"
        if path.is_file():
            return MultiViewData.load(path)
    data = render_procedural(list(range(seed, seed + count)), config, n_points, workers, progress)
    if path is not None:
        data.save(path)
    return data


# -- user renders ---------------------------------------------------------------------------------
def _read_image(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB composited on white (size, size, 3) uint8 and alpha (size, size) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {path}: {exc}", fix="use PNG/JPEG frames") from exc
    if im.width != im.height:
        raise InputError(f"frame {path} is {im.width}x{im.height}, not square",
                         fix="render square frames (resolution_x == resolution_y)")
    im = im.resize((size, size), Image.Resampling.BOX if im.width >= size else Image.Resampling.BICUBIC)
    rgba = np.asarray(im).astype(np.float32) / 255.0
    a = rgba[..., 3:4]
    rgb = rgba[..., :3] * a + (1.0 - a)  # straight alpha over white
    return (rgb * 255 + 0.5).astype(np.uint8), (a[..., 0] * 255 + 0.5).astype(np.uint8)


def _c2w(value, where: str) -> np.ndarray:
    m = np.asarray(value, dtype=np.float32)
    if m.shape == (4, 4):
        m = m[:3]
    if m.shape != (3, 4) or not np.isfinite(m).all():
        raise InputError(f"{where}: c2w must be a 3x4 or 4x4 matrix of numbers", fix="see the cameras.json format")
    return m


def _load_object(folder: Path, input_size: int, view_size: int) -> dict[str, np.ndarray]:
    cam_file = folder / "cameras.json"
    try:
        meta = json.loads(cam_file.read_text(encoding="utf-8"))
        frames = meta["frames"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{cam_file} is not a valid cameras.json: {exc}",
                         fix="see the cameras.json format in the README (Preview model section)") from exc
    if not frames:
        raise InputError(f"{cam_file} lists no frames", fix="add the rendered frames")
    cams, intr, rgbs, alphas = [], [], [], []
    for i, fr in enumerate(frames):
        where = f"{cam_file} frame {i}"
        try:
            file = folder / fr["file"]
            k = [float(fr.get(key, d)) for key, d in (("fx", 0.75), ("fy", 0.75), ("cx", 0.5), ("cy", 0.5))]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where} is malformed: {exc}", fix="each frame needs file and c2w") from exc
        cams.append(_c2w(fr.get("c2w"), where))
        intr.append(k)
        rgb, a = _read_image(file, view_size)
        rgbs.append(rgb)
        alphas.append(a)
    input_name = meta.get("input", frames[0]["file"])
    input_frame = next((i for i, fr in enumerate(frames) if fr["file"] == input_name), None)
    in_rgb, _ = _read_image(folder / input_name, input_size)
    if input_frame is None:  # an input image that is not also a supervision frame: the source camera
        src = np.concatenate([np.array([[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]], np.float32).reshape(-1),
                              np.array([0.75, 0.75, 0.5, 0.5], np.float32)])
        src = np.asarray(meta.get("input_camera", src), dtype=np.float32).reshape(-1)
    else:
        src = np.concatenate([cams[input_frame].reshape(-1), np.asarray(intr[input_frame], np.float32)])
    return {"input_rgb": in_rgb, "source_camera": src.astype(np.float32), "view_rgb": np.stack(rgbs),
            "view_alpha": np.stack(alphas), "view_c2w": np.stack(cams), "view_intrinsics": np.asarray(intr, np.float32)}


def folder_dataset(root: str | Path, input_size: int, view_size: int) -> MultiViewData:
    """Load user renders: ``root/cameras.json`` (one object) or ``root/*/cameras.json`` (many).

    Objects must have the same number of frames (they are stacked); no 3D supervision.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}", fix="point data.folder at a folder of renders")
    folders = [root] if (root / "cameras.json").is_file() else sorted(p.parent for p in root.glob("*/cameras.json"))
    if not folders:
        raise InputError(f"no cameras.json in {root} or its sub-folders",
                         fix="render the folder with the README's Blender script or write cameras.json")
    objs = [_load_object(f, input_size, view_size) for f in folders]
    counts = {o["view_rgb"].shape[0] for o in objs}
    if len(counts) > 1:
        raise InputError(f"objects in {root} have different frame counts {sorted(counts)}",
                         fix="render the same number of frames for every object")
    stacked = {k: torch.from_numpy(np.stack([o[k] for o in objs])) for k in objs[0]}
    return MultiViewData(seeds=torch.full((len(objs),), -1, dtype=torch.int64), **stacked)


# -- batches --------------------------------------------------------------------------------------
@dataclass
class RayBatch:
    """A training batch. ``images`` (B, 3, S, S) float in [0, 1]; ``source_camera`` (B, 16);
    ``origins``/``dirs`` (B, R, 3); ``rgb`` (B, R, 3) and ``alpha`` (B, R) targets; optional
    ``points`` (B, K, 3) / ``occupancy`` (B, K) and ``surface_points`` (B, K, 3) / ``surface_rgb`` (B, K, 3)."""

    images: torch.Tensor
    source_camera: torch.Tensor
    origins: torch.Tensor
    dirs: torch.Tensor
    rgb: torch.Tensor
    alpha: torch.Tensor
    points: torch.Tensor | None = None
    occupancy: torch.Tensor | None = None
    surface_points: torch.Tensor | None = None
    surface_rgb: torch.Tensor | None = None

    def to(self, device) -> "RayBatch":
        return RayBatch(**{k: None if v is None else v.to(device) for k, v in self.__dict__.items()})


def _resize_views(rgb: torch.Tensor, alpha: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, H, W, 3) and (V, H, W) uint8 -> float (V, size, size, 3), (V, size, size), area-averaged."""
    rgb = rgb.float() / 255.0
    alpha = alpha.float() / 255.0
    if rgb.shape[1] != size:
        rgb = F.interpolate(rgb.permute(0, 3, 1, 2), size=(size, size), mode="area").permute(0, 2, 3, 1)
        alpha = F.interpolate(alpha[:, None], size=(size, size), mode="area")[:, 0]
    return rgb, alpha


def make_batch(data: MultiViewData, index: list[int] | torch.Tensor, *, render_size: int, rays_per_sample: int,
               views_per_sample: int, generator: torch.Generator, fg_fraction: float = 0.5,
               points_per_sample: int = 0) -> RayBatch:
    """Random rays from ``views_per_sample`` random views of each object, at ``render_size``.

    ``fg_fraction`` of the rays (in expectation) start on foreground pixels (the silhouette
    needs both sides); pixel positions are pixel centres of the ``render_size`` grid.
    """
    index = torch.as_tensor(index)
    n_views = data.view_rgb.shape[1]
    per_view = max(1, rays_per_sample // views_per_sample)
    origins, dirs, rgbs, alphas, pts, occs, spts, srgb = [], [], [], [], [], [], [], []
    for i in index.tolist():
        views = torch.randperm(n_views, generator=generator)[:views_per_sample]
        o_i, d_i, c_i, a_i = [], [], [], []
        if rays_per_sample > 0:  # a 3D-only stage samples no rays
            rgb, alpha = _resize_views(data.view_rgb[i, views], data.view_alpha[i, views], render_size)
            for j, v in enumerate(views.tolist()):
                a = alpha[j].reshape(-1)
                fg = (a > 0).float()
                weights = (1 - fg_fraction) / a.numel() + fg_fraction * fg / fg.sum().clamp(min=1.0)
                pix = torch.multinomial(weights, per_view, replacement=True, generator=generator)
                u = ((pix % render_size).float() + 0.5) / render_size
                vv = ((pix // render_size).float() + 0.5) / render_size
                o, d = pixel_rays(data.view_c2w[i, v], data.view_intrinsics[i, v].tolist(), u, vv)
                o_i.append(o)
                d_i.append(d)
                c_i.append(rgb[j].reshape(-1, 3)[pix])
                a_i.append(a[pix])
        origins.append(torch.cat(o_i) if o_i else torch.zeros(0, 3))
        dirs.append(torch.cat(d_i) if d_i else torch.zeros(0, 3))
        rgbs.append(torch.cat(c_i) if c_i else torch.zeros(0, 3))
        alphas.append(torch.cat(a_i) if a_i else torch.zeros(0))
        if points_per_sample and data.points is not None:
            k = torch.randint(0, data.points.shape[1], (points_per_sample,), generator=generator)
            pts.append(data.points[i, k].float())
            occs.append(data.occupancy[i, k].float())
            if data.surface_points is not None:
                k = torch.randint(0, data.surface_points.shape[1], (points_per_sample // 2,), generator=generator)
                spts.append(data.surface_points[i, k].float())
                srgb.append(data.surface_rgb[i, k].float() / 255.0)
    images = data.input_rgb[index].permute(0, 3, 1, 2).float() / 255.0
    return RayBatch(images, data.source_camera[index].float(), torch.stack(origins), torch.stack(dirs),
                    torch.stack(rgbs), torch.stack(alphas),
                    *(torch.stack(x) if x else None for x in (pts, occs, spts, srgb)))
