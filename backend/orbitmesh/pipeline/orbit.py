"""Orbit stage: one object image -> SV3D orbit views (21 frames at 576x576) and their cameras.

As the SGM reference (``scripts/sampling/simple_video_sample.py``, version sv3d_p / sv3d_u):

1. the object, rescaled to a fixed frame ratio, on white at 576x576; ``x`` in [-1, 1];
2. conditioning: CLIP image embedding of ``x``; VAE encoder mode of ``x + cond_aug * noise``
   (unscaled); per frame ``y`` = sinusoid(cond_aug) [++ sinusoid(polar) ++ sinusoid(azimuth)];
   unconditional branch: zeroed CLIP embedding and zeroed concat latent;
3. Euler EDM sampling (sigma 0.002..700, rho 7) with triangle guidance (1 -> 2.5 -> 1 over frames);
4. image-VAE decode in chunks; the last frame (azimuth 0, the input view) is replaced by the input.

Azimuths: ``linspace(0, 360, F + 1)[1:] % 360`` (frame i at 360 (i+1)/F degrees, the last at 0);
polar = 90 deg - elevation. Artefacts: ``orbit_input.png``, ``orbit_NN.png`` and ``orbit_cameras.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from orbitmesh.errors import InputError
from orbitmesh.models.catalogue import DEFAULTS
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import StageContext
from orbitmesh.pipeline.request import default_settings
from orbitmesh.progress import ProgressCallback, null_progress

STAGE = modes.ORBIT
CAMERAS_FILE = "orbit_cameras.json"
# Frames per VAE decode call on the CPU: a 576x576 frame's full-resolution decoder maps are ~0.17 GB each at float32,
# so 7 frames at once cost GBs; on the CPU smaller calls are no slower.
CPU_DECODE_CHUNK = 2


def low_memory_path(pipe) -> bool:
    """Run the two guidance branches one after the other (same numbers, half the activations): with offload, and
    on the CPU, where batching them saves no time (the same work, compute-bound) but doubles the activation
    memory (2 x 21 frames at float32: several GB next to ~9 GB of weights)."""
    return bool(getattr(pipe, "offload", False)) or str(pipe.device) == "cpu"


def decode_chunk(pipe, cfg: "OrbitConfig") -> int:
    """Frames per VAE decode call: ``cfg.decode_chunk``, at most :data:`CPU_DECODE_CHUNK` on the CPU."""
    return min(cfg.decode_chunk, CPU_DECODE_CHUNK) if str(pipe.device) == "cpu" else cfg.decode_chunk


@dataclass
class OrbitConfig:
    """Orbit settings (JSON-serialisable with ``asdict`` for job.json).

    ``model``: 'sv3d_p' / 'sv3d_u' (looked up in the model folder, else the gated hub repo), a
    converted folder or an SGM ``.safetensors`` file. ``object_ratio``: the object's longer side
    as a fraction of the frame. ``radius`` / ``fov_deg``: the nominal orbit camera written with
    each frame (SV3D renders objects normalised to this camera; it outputs no camera itself).
    ``offload``: keep models on the CPU and move each to the GPU only while it runs (for <= 12 GB).
    On the CPU the guidance branches always run one after the other and ``decode_chunk`` is capped at
    :data:`CPU_DECODE_CHUNK` (:func:`low_memory_path`, :func:`decode_chunk`): memory, at no cost in time there.
    """

    model: str = DEFAULTS["video"]
    steps: int = default_settings()["orbit_steps"]
    elevation: float = 10.0
    num_frames: int = 21
    size: int = 576
    object_ratio: float = 0.85
    cond_aug: float = 1e-5
    min_guidance: float = 1.0
    max_guidance: float = 2.5
    seed: int = 42
    decode_chunk: int = 7
    offload: bool = False
    replace_last_frame: bool = True
    radius: float = 2.0
    fov_deg: float = 33.8

    def validate(self) -> "OrbitConfig":
        def number(name: str, lo: float, hi: float, whole: bool = False) -> None:
            value = getattr(self, name)
            ok = not isinstance(value, bool) and isinstance(value, (int,) if whole else (int, float))
            if not ok or not math.isfinite(value) or not lo <= value <= hi:
                kind = "a whole number" if whole else "a number"
                raise InputError(f"orbit {name} must be {kind} in [{lo}, {hi}], got {value!r}",
                                 fix=f"set {name} inside that range")

        number("steps", 1, 500, whole=True)
        number("elevation", -89.0, 89.0)
        number("num_frames", 2, 64, whole=True)
        number("size", 64, 2048, whole=True)
        if self.size % 64:
            raise InputError(f"orbit size must be a multiple of 64, got {self.size}", fix="use 576 (SV3D's size)")
        number("object_ratio", 0.1, 1.0)
        number("cond_aug", 0.0, 1.0)
        number("min_guidance", 0.0, 20.0)
        number("max_guidance", 0.0, 20.0)
        number("seed", 0, 2**32 - 1, whole=True)
        number("decode_chunk", 1, 64, whole=True)
        number("radius", 0.01, 100.0)
        number("fov_deg", 1.0, 179.0)
        return self


@dataclass
class OrbitResult:
    """frames: F PIL RGB images (size x size); cameras: one dict per frame (see ``orbit_cameras``)."""

    frames: list[Image.Image]
    cameras: list[dict[str, float]]
    input_image: Image.Image
    timings: dict[str, float] = field(default_factory=dict)
    peak_vram_bytes: int | None = None


def orbit_azimuths_deg(num_frames: int) -> np.ndarray:
    """(F,) azimuths in degrees: frame i at 360 (i+1)/F mod 360; the last frame (0) is the input view."""
    return np.linspace(0.0, 360.0, num_frames + 1)[1:] % 360.0


def orbit_cameras(cfg: OrbitConfig) -> list[dict[str, float]]:
    """Per frame: azimuth/elevation (degrees), polar (radians, the model input), radius, fov."""
    return [{"index": i, "azimuth_deg": float(a), "elevation_deg": float(cfg.elevation),
             "polar_rad": math.radians(90.0 - cfg.elevation), "azimuth_rad": math.radians(float(a)),
             "radius": float(cfg.radius), "fov_deg": float(cfg.fov_deg)}
            for i, a in enumerate(orbit_azimuths_deg(cfg.num_frames))]


def image_to_tensor(image: Image.Image):
    """PIL RGB -> (1, 3, H, W) float32 in [-1, 1]."""
    import torch

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None] * 2.0 - 1.0


def tensor_to_images(x) -> list[Image.Image]:
    """(N, 3, H, W) in [-1, 1] -> N PIL RGB images."""
    arr = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


def generate_orbit(pipe, image: Image.Image, cfg: OrbitConfig,
                   progress: ProgressCallback = null_progress) -> OrbitResult:
    """Run SV3D on a preprocessed (size x size, object on white) image. ``progress('orbit', step,
    total)`` after encoding, after every sampling step (it may raise JobCancelled) and after decoding."""
    import torch

    from orbitmesh.models.video.conditioning import vector_conditioning
    from orbitmesh.models.video.sampler import denoise, edm_sigmas, euler_edm_sample, guided, triangle_scales

    cfg.validate()
    if image.size != (cfg.size, cfg.size):
        raise InputError(f"the orbit input must be {cfg.size}x{cfg.size}, got {image.width}x{image.height}",
                         fix="preprocess the image with preprocess_image(size=...) first")
    frames, total = cfg.num_frames, cfg.steps + 2
    timings: dict[str, float] = {}
    is_cuda = str(pipe.device).startswith("cuda")
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    gen = torch.Generator("cpu").manual_seed(int(cfg.seed))  # CPU noise: same frames on any device
    t0 = time.perf_counter()

    x = image_to_tensor(image)
    cond_frames = x + cfg.cond_aug * torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        clip = pipe.encode_image(x)  # (1, 1, D)
        latent = pipe.encode_latent(cond_frames)  # (1, 4, h, w), unscaled as the reference
    cameras = orbit_cameras(cfg)
    cond_aug = torch.full((frames,), float(cfg.cond_aug))
    if pipe.has_cameras:
        y = vector_conditioning(cond_aug, torch.tensor([c["polar_rad"] for c in cameras]),
                                torch.tensor([c["azimuth_rad"] for c in cameras]))
    else:
        y = vector_conditioning(cond_aug)
    # Batch [uncond, cond] as SGM's guider does; frames flattened: (2F, ...).
    context = torch.cat([torch.zeros_like(clip), clip]).repeat_interleave(frames, dim=0).to(pipe.device)
    concat = torch.cat([torch.zeros_like(latent), latent]).repeat_interleave(frames, dim=0).to(pipe.device)
    y = y.to(pipe.device)
    y2 = torch.cat([y, y])
    low_memory = low_memory_path(pipe)
    scales = triangle_scales(frames, cfg.min_guidance, cfg.max_guidance).to(pipe.device)
    timings["encode"] = time.perf_counter() - t0
    progress(STAGE, 1, total, "encoded the input image")

    noise = torch.randn((frames, *latent.shape[1:]), generator=gen).to(pipe.device)
    sigmas = edm_sigmas(cfg.steps).to(pipe.device)

    def denoiser(z, sigma):
        if low_memory:  # one branch at a time: half the activation memory, same numbers
            uncond, _ = denoise(pipe.unet, z, sigma, concat[:frames], context[:frames], y, frames)
            cond, _ = denoise(pipe.unet, z, sigma, concat[frames:], context[frames:], y, frames)
        else:
            both, _ = denoise(pipe.unet, torch.cat([z, z]), torch.cat([sigma, sigma]), concat, context, y2, frames)
            uncond, cond = both.chunk(2)
        return guided(cond, uncond, scales)

    t1 = time.perf_counter()
    with torch.no_grad(), pipe.on_device(pipe.unet):
        samples = euler_edm_sample(denoiser, noise, sigmas,
                                   on_step=lambda i, n: progress(STAGE, 1 + i, total, f"sampling step {i}/{n}"))
    timings["sample"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    decoded = pipe.decode(samples, chunk=decode_chunk(pipe, cfg))
    if cfg.replace_last_frame:  # the reference shows the input itself as the azimuth-0 view
        decoded[-1:] = x
    out = tensor_to_images(decoded)
    timings["decode"] = time.perf_counter() - t2
    peak = int(torch.cuda.max_memory_allocated()) if is_cuda else None
    return OrbitResult(frames=out, cameras=cameras, input_image=image, timings=timings, peak_vram_bytes=peak)


def load_pipeline(cfg: OrbitConfig, settings=None):
    """Resolve ``cfg.model`` against the settings' model folder and load it on the settings' device."""
    from orbitmesh.device import resolve_device, resolve_dtype
    from orbitmesh.models.video.pipeline import SV3DPipeline, resolve_source

    device = resolve_device(settings.device if settings else "auto")
    dtype = resolve_dtype(settings.dtype if settings else "auto", device)
    from orbitmesh.models.registry import hub_cache_dir

    model_dir = settings.model_dir if settings else None
    source, variant = resolve_source(cfg.model, model_dir)
    return SV3DPipeline.from_pretrained(source, variant=variant, device=device, dtype=dtype,
                                        offload=cfg.offload and device != "cpu",
                                        cache_dir=hub_cache_dir(model_dir) if model_dir else None)


def write_orbit(job, result: OrbitResult, cfg: OrbitConfig) -> list[str]:
    """Write ``orbit_input.png``, ``orbit_NN.png`` and ``orbit_cameras.json`` atomically; returns the frame names."""
    job.save_image("orbit_input.png", result.input_image)
    names = []
    for i, frame in enumerate(result.frames):
        names.append(f"orbit_{i:02d}.png")
        job.save_image(names[-1], frame)
    job.write_json(CAMERAS_FILE, {
        "convention": ("azimuth in degrees, counter-clockwise seen from above, 0 = the input view (last frame); "
                       "elevation in degrees above the horizon; camera on a sphere of the given radius looking "
                       "at the origin; fov is the vertical and horizontal field of view (square frames)"),
        "model": cfg.model, "size": cfg.size,
        "frames": [{**cam, "file": name} for cam, name in zip(result.cameras, names)],
    })
    return names


class OrbitStage:
    """Orchestrator stage: the preprocessed object (``state.preprocess.cutout``, else ``state.image_path``)
    -> orbit frames + cameras in the job folder; ``state.orbit`` is the :class:`OrbitResult`.
    ``pipeline`` may be given (tests, a server keeping models loaded)."""

    name = STAGE
    needs = (("preprocess", "image_path", "image"),)
    gives = ("orbit",)

    def __init__(self, config: OrbitConfig | None = None, pipeline=None, settings=None) -> None:
        self.config = (config or OrbitConfig()).validate()
        self.pipeline = pipeline
        self.settings = settings

    def run(self, ctx: StageContext) -> None:
        from orbitmesh.pipeline.preprocess import preprocess_image

        cfg = self.config
        total = cfg.steps + 2
        ctx.progress(STAGE, 0, total, "preparing the orbit input")
        state = ctx.state
        pre = state.preprocess
        if pre is not None and getattr(pre, "cutout", None) is not None:
            source, remover = pre.cutout, "alpha"
        elif state.image_path:
            source, remover = state.image_path, "auto"
        elif isinstance(state.image, Image.Image):
            source, remover = state.image, "auto"
        else:
            raise InputError("no input image for the orbit stage", fix="give an image path")
        image = preprocess_image(source, size=cfg.size, border_ratio=1.0 - cfg.object_ratio, remover=remover).image
        if self.pipeline is None:
            ctx.progress(STAGE, 0, total, f"loading {cfg.model}")
            self.pipeline = load_pipeline(cfg, self.settings)
        result = generate_orbit(self.pipeline, image, cfg, ctx.progress)
        names = write_orbit(ctx.job, result, cfg)
        state.orbit = result
        info: dict[str, Any] = {"config": asdict(cfg), "frames": names, "cameras": CAMERAS_FILE,
                                "variant": getattr(self.pipeline, "variant", None),
                                "timings": {k: round(v, 4) for k, v in result.timings.items()}}
        if result.peak_vram_bytes is not None:
            info["peak_vram_gb"] = round(result.peak_vram_bytes / 2**30, 3)
        ctx.job.update(orbit=info)
        ctx.progress(STAGE, total, total, f"wrote {len(names)} orbit frames")
