"""Full-size models end to end: random weights in the released file layouts, through the real commands.

``python benchmarks/full_size_e2e.py [--only vfusion3d|triposr|sv3d] [--cache DIR] [--json]`` (never in CI):

1. Builds random-weight models of the released full-size configurations and writes them in the exact
   layouts users download, into ``DIR`` (default ``~/.cache/orbitmesh/full-size``; a second run reuses
   them, ``--rebuild`` makes them again):

   * VFusion3D: the GitHub checkpoint ``vfusion3d-github/vfusion3dckpt`` (a torch file with
     ``model_state_dict``, transformers-4 Dinov2 names) and the hub layout ``models/vfusion3d/``
     (``config.json`` as the hub port has it, whose sizes disagree with the weights, + ``model.safetensors``);
   * TripoSR: ``models/triposr/`` with the released ``config.yaml`` + ``model.ckpt`` (transformers-4 ViT names);
   * SV3D: ``sgm/sv3d_p.safetensors`` in the SGM single-file layout (``model.diffusion_model.*``,
     ``conditioner.embedders.0.open_clip.model.*`` with the OpenCLIP ViT-H/14 image tower and the text
     tower's leftovers, ``conditioner.embedders.1.encoder.*`` (the mode-only VAE), ``first_stage_model.decoder.*``
     with SGM's VideoDecoder temporal layers), then ``orbitmesh convert-sv3d`` into ``models/sv3d_p/``.

   Names and shapes come from our own modules built on the meta device, mapped back to the released names by
   the inverse of our loaders' key mappings (:mod:`orbitmesh.models.lrm.loading`, ``triposr.loading``,
   :mod:`orbitmesh.models.video.tiny`), so the layouts cannot drift from what the loaders read. Every tensor
   is filled on its own (:func:`fill_`: norm scales 1, biases 0, embeddings N(0, 0.02), other weights
   U(+-1/sqrt(fan_in)), seeded by its name); the SGM file is streamed tensor by tensor.

   Random weights put no density above a trained model's mesh threshold, so each LRM's last density bias is
   shifted (:func:`orbitmesh.bench.reconstruction.calibrate_density`) until the densest 10 % of a 32^3 grid
   of the planes it makes from the input photo (preprocessed by the pipeline's own stages) lies above it.

2. Runs the real commands as child processes, on one photo (default: the bundled example image):
   ``orbitmesh generate`` in fast mode with each LRM layout (``--model`` a file or folder, ``--model-dir``
   the cache's model folder) and ``--mode quality`` with the converted SV3D folder and ``--orbit-steps``
   (default 2) sampling steps. Each run records the stage seconds of its ``job.json``, the child's peak RSS
   (``wait4``) and the GLB it wrote.

The preparation steps (build, convert) also run as child processes, so each step's peak RSS is its own.
JSON (``--json``, the last line): ``runs`` (one {model, mode, glb, seconds, peak_rss_gb, wall_s, faces,
glb_bytes, job_dir[, error]} per run), ``prepare`` ({step: {seconds, peak_rss_gb, cached, ...}}),
``cache``, ``image``, ``orbit_steps``, ``machine``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

MODELS = ("vfusion3d", "triposr", "sv3d")
RUNS: dict[str, tuple[str, ...]] = {"vfusion3d": ("vfusion3d-github", "vfusion3d-hub"), "triposr": ("triposr",),
                                    "sv3d": ("sv3d",)}
LAYOUT_VERSION = 1  # bump when a layout or the fill changes: cached models are rebuilt
SEED = 0
ORBIT_STEPS = 2
GITHUB_FILE = "vfusion3dckpt"  # the name the VFusion3D README downloads it to (./checkpoints/vfusion3dckpt)
# The hub port's config.json (model_type lrm_generator): its sizes are not the weights' (the loader reads those
# off the tensors), which is what the hub layout is kept for here.
VFUSION3D_HUB_CONFIG = {"camera_embed_dim": 256, "rendering_samples_per_ray": 64, "transformer_dim": 512,
                        "transformer_layers": 6, "transformer_heads": 8, "triplane_low_res": 32,
                        "triplane_high_res": 128, "triplane_dim": 256, "encoder_freeze": True,
                        "encoder_model_name": "facebook/dinov2-base", "encoder_feat_dim": 768,
                        "model_type": "lrm_generator"}
# OpenCLIP ViT-H/14 (laion2b_s32b_b79k): the image tower SV3D conditions on, and what FrozenOpenCLIPImageEmbedder
# keeps of the text tower after deleting its transformer.
CLIP_VIT_H = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
              "image_size": 224, "patch_size": 14, "projection_dim": 1024, "hidden_act": "gelu",
              "layer_norm_eps": 1e-5}
CLIP_TEXT_LEFTOVERS = {"positional_embedding": (77, 1024), "text_projection": (1024, 1024),
                       "token_embedding.weight": (49408, 1024), "ln_final.weight": (1024,), "ln_final.bias": (1024,),
                       "logit_scale": ()}
VAE_BLOCKS = (128, 256, 512, 512)  # SV3D's image VAE (ch 128, ch_mult [1, 2, 4, 4], 2 res blocks)
_EMBEDDINGS = ("pos_embed", "position_embeddings", "positional_embedding", "class_embedding", "cls_token",
               "mask_token", "token_embedding.weight", "tokenizer.embeddings", "position_embedding.weight")


# -- random weights, one tensor at a time -------------------------------------------------------------------
def fill_(name: str, tensor, seed: int = SEED):
    """Fill ``tensor`` in place with random values that suit its role (from its name and shape); returns it.

    Norm scales and layer scales (1-D weights) 1, biases 0, ``mix_factor`` 0 (a 0.5 blend), ``logit_scale``
    ln 100, position/class/token embeddings N(0, 0.02), every other weight U(+-1/sqrt(fan_in)) (PyTorch's
    Linear/Conv default scale). Seeded by ``seed`` and the name, so the same name gets the same values.
    """
    import torch

    gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2 ** 63)
    leaf = name.rsplit(".", 1)[-1]
    with torch.no_grad():
        if "logit_scale" in name:
            return tensor.fill_(math.log(100.0))
        if "mix_factor" in name:
            return tensor.zero_()
        if any(name.endswith(e) for e in _EMBEDDINGS):
            return tensor.normal_(0.0, 0.02, generator=gen)
        if leaf == "bias" or leaf.endswith("_bias"):
            return tensor.zero_()
        if tensor.ndim <= 1:
            return tensor.fill_(1.0)
        fan_in = math.prod(tensor.shape[1:])
        bound = 1.0 / math.sqrt(max(1, fan_in))
        return tensor.uniform_(-bound, bound, generator=gen)


def random_tensor(name: str, shape: Sequence[int], dtype=None, seed: int = SEED):
    """A new tensor of ``shape`` filled by :func:`fill_` (float32 unless ``dtype``)."""
    import torch

    return fill_(name, torch.empty(tuple(shape), dtype=dtype or torch.float32), seed)


def materialise(model, seed: int = SEED):
    """A model built on the meta device -> on the CPU with every tensor filled by :func:`fill_` (by its state-dict
    name), in place: one copy of the weights, never a second one."""
    model.to_empty(device="cpu")
    for name, tensor in model.state_dict(keep_vars=True).items():
        fill_(name, tensor.data, seed)
    return model.eval()


def random_lrm(config, seed: int = SEED):
    """A VFusion3D-family LRM of ``config`` with :func:`fill_` weights (built on the meta device first)."""
    from orbitmesh.models.lrm.loading import build

    return materialise(build(config, meta=True), seed)


def random_triposr(config, seed: int = SEED):
    """A TripoSR of ``config`` with :func:`fill_` weights (built on the meta device first)."""
    from orbitmesh.models.triposr.loading import build

    return materialise(build(config, meta=True), seed)


# -- the released layouts ------------------------------------------------------------------------------------
def vfusion3d_reference_state_dict(model) -> dict:
    """Our LRM's weights under the reference names (transformers-4 Dinov2 naming), as the releases hold them:
    the inverse of :func:`orbitmesh.models.lrm.loading.to_model_keys`. Shares the model's tensors (no copy)."""
    from orbitmesh.models.lrm.loading import map_dino_keys

    return map_dino_keys(model.state_dict(), {"encoder.model.encoder.layer.0.attention.attention.query.weight"})


def write_vfusion3d_github(model, path: str | os.PathLike) -> Path:
    """The GitHub release: a torch file with ``model_state_dict`` (reference names)."""
    import torch

    from orbitmesh import atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        torch.save({"model_state_dict": vfusion3d_reference_state_dict(model)}, tmp)
    return path


def write_vfusion3d_hub(model, folder: str | os.PathLike, config: Mapping[str, Any] | None = None) -> Path:
    """The hub layout: ``config.json`` (the hub port's, :data:`VFUSION3D_HUB_CONFIG` by default) + ``model.safetensors``
    (reference names, no prefix), written one tensor at a time from the model's own tensors."""
    from orbitmesh import atomic
    from orbitmesh.models.streaming import Entry, write_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = vfusion3d_reference_state_dict(model)
    entries = [Entry(k, v.dtype, tuple(v.shape), lambda v=v: v) for k, v in sd.items()]
    write_safetensors(folder / "model.safetensors", entries, {"format": "pt"})
    atomic.write_text(folder / "config.json", json.dumps(dict(config or VFUSION3D_HUB_CONFIG), indent=2) + "\n")
    return folder


def write_triposr_released(model, folder: str | os.PathLike, config_yaml: str | None = None) -> Path:
    """The released layout: ``config.yaml`` (the released text by default) + ``model.ckpt`` (a plain torch state
    dict, transformers-4 ViT names). A tiny model without ``config_yaml`` gets ours
    (:func:`orbitmesh.models.triposr.loading.save_released`)."""
    import torch

    from orbitmesh import atomic
    from orbitmesh.models.triposr.loading import map_vit_keys, save_released

    folder = Path(folder)
    if config_yaml is None:
        save_released(model, folder, vit_keys="v4")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(folder / "model.ckpt") as tmp:
        torch.save(map_vit_keys(model.state_dict(), "v4"), tmp)
    atomic.write_text(folder / "config.yaml", config_yaml)
    return folder


def sv3d_sgm_plan(sgm: Mapping[str, Any] | None = None, *, vae_blocks: Sequence[int] = VAE_BLOCKS,
                  vae_layers: int = 2, clip: Mapping[str, Any] | None = None,
                  clip_text: Mapping[str, tuple[int, ...]] | None = None, video_decoder: bool = True,
                  seed: int = SEED) -> list:
    """The tensors of an SGM SV3D checkpoint (:class:`orbitmesh.models.streaming.Entry` list, each made on demand
    by :func:`random_tensor`): names and shapes from our modules on the meta device mapped back to SGM names
    (the inverse of :mod:`orbitmesh.models.video.convert`). Defaults: the released sv3d_p sizes."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from orbitmesh.models.streaming import Entry
    from orbitmesh.models.video.convert import build_unet
    from orbitmesh.models.video.tiny import (
        SV3D_P_SGM_CONFIG,
        ldm_vae_state_dict,
        open_clip_visual_state_dict,
        sgm_unet_state_dict,
    )

    sgm = dict(sgm or SV3D_P_SGM_CONFIG)
    clip = dict(clip or CLIP_VIT_H)
    clip_text = CLIP_TEXT_LEFTOVERS if clip_text is None else clip_text
    with torch.device("meta"):
        unet = build_unet(sgm)
        vae = AutoencoderKL(block_out_channels=list(vae_blocks), layers_per_block=vae_layers, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * len(vae_blocks),
                            up_block_types=["UpDecoderBlock2D"] * len(vae_blocks), norm_num_groups=32)
        tower = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip))
    shapes: dict[str, tuple[int, ...]] = {}
    shapes.update({f"model.diffusion_model.{k}": tuple(v.shape) for k, v in sgm_unet_state_dict(unet, sgm).items()})
    clip_root = "conditioner.embedders.0.open_clip.model."
    shapes.update({f"{clip_root}visual.{k}": tuple(v.shape) for k, v in open_clip_visual_state_dict(tower).items()})
    shapes.update({clip_root + k: tuple(s) for k, s in clip_text.items()})
    ldm = {k: tuple(v.shape) for k, v in ldm_vae_state_dict(vae).items()}
    # AutoencoderKLModeOnly (legacy engine): encoder, decoder, quant_conv, post_quant_conv
    shapes.update({f"conditioner.embedders.1.encoder.{k}": s for k, s in ldm.items()})
    # AutoencodingEngine with an Identity encoder and SGM's VideoDecoder: the 2-D decoder's weights ...
    decoder = {k: s for k, s in ldm.items() if k.startswith("decoder.")}
    shapes.update({f"first_stage_model.{k}": s for k, s in decoder.items()})
    if video_decoder:  # ... plus its temporal layers, which SV3D's image decoding does not use
        shapes.update({f"first_stage_model.{k}": s for k, s in _video_decoder_extras(decoder).items()})
    return [Entry(name, torch.float32, shape, lambda name=name, shape=shape: random_tensor(name, shape, seed=seed))
            for name, shape in shapes.items()]


def _video_decoder_extras(decoder: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """SGM ``VideoDecoder`` layers on top of the image decoder: a ``time_stack`` ResBlock (3x1x1 convs) and a
    ``mix_factor`` per res block, and ``time_mix_conv`` on ``conv_out``."""
    import re

    out: dict[str, tuple[int, ...]] = {}
    for key, shape in decoder.items():
        m = re.fullmatch(r"(decoder\.(?:mid\.block_\d|up\.\d+\.block\.\d+))\.conv2\.weight", key)
        if m:
            c, block = shape[0], m.group(1)
            for norm in ("in_layers.0", "out_layers.0"):
                out[f"{block}.time_stack.{norm}.weight"] = (c,)
                out[f"{block}.time_stack.{norm}.bias"] = (c,)
            for conv in ("in_layers.2", "out_layers.3"):
                out[f"{block}.time_stack.{conv}.weight"] = (c, c, 3, 1, 1)
                out[f"{block}.time_stack.{conv}.bias"] = (c,)
            out[f"{block}.mix_factor"] = (1,)
    channels = decoder["decoder.conv_out.weight"][0]
    out["decoder.conv_out.time_mix_conv.weight"] = (channels, channels, 3, 1, 1)
    out["decoder.conv_out.time_mix_conv.bias"] = (channels,)
    return out


def write_sv3d_sgm(path: str | os.PathLike, plan: Sequence | None = None) -> int:
    """Write the SGM single-file checkpoint (:func:`sv3d_sgm_plan`, default full size) one tensor at a time;
    returns its size in bytes."""
    from orbitmesh.models.streaming import write_safetensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors(path, plan if plan is not None else sv3d_sgm_plan(), {"format": "pt"})


# -- density calibration ----------------------------------------------------------------------------------
def calibrate_on_image(model, image: str | os.PathLike, model_dir: str | os.PathLike, work_dir: str | os.PathLike
                       ) -> dict[str, Any]:
    """Shift ``model``'s density bias so that its planes for ``image`` cross the mesh threshold (see the module
    docstring); the image goes through the pipeline's own preprocess and LRM stages, so the planes are those a
    job computes. Returns {threshold, density_shift, quantile, grid}."""
    import torch

    from orbitmesh.bench.reconstruction import CALIBRATION_GRID, CALIBRATION_QUANTILE, calibrate_density
    from orbitmesh.imaging.background import rembg_model_in
    from orbitmesh.jobs import JobFolder
    from orbitmesh.pipeline.orchestrator import Orchestrator
    from orbitmesh.pipeline.preprocess import PreprocessConfig, PreprocessStage
    from orbitmesh.pipeline.reconstruct import LRMStage
    from orbitmesh.pipeline.state import PipelineState

    job = JobFolder.create(work_dir, "calibrate")
    stages = [PreprocessStage(PreprocessConfig(rembg_model_path=rembg_model_in(model_dir))),
              LRMStage(lambda notify: model, device="cpu", compute_dtype=torch.float32)]
    state, _ = Orchestrator(stages).run(job, state=PipelineState(image_path=str(image)))
    shift = calibrate_density(model, state.planes)
    return {"threshold": model.config.mesh_threshold, "density_shift": round(float(shift), 6),
            "quantile": CALIBRATION_QUANTILE, "grid": CALIBRATION_GRID}


# -- preparation steps (each in its own child process) ----------------------------------------------------------
class Layout:
    """Where everything lives under the cache folder."""

    def __init__(self, cache: str | os.PathLike) -> None:
        self.cache = Path(cache).expanduser().resolve()
        self.models = self.cache / "models"  # the --model-dir of every run
        self.github = self.cache / "vfusion3d-github" / GITHUB_FILE
        self.hub = self.models / "vfusion3d"
        self.triposr = self.models / "triposr"
        self.sgm = self.cache / "sgm" / "sv3d_p.safetensors"
        self.sv3d = self.models / "sv3d_p"  # where the catalogue finds the converted sv3d_p
        self.jobs = self.cache / "jobs"
        self.glb = self.cache / "glb"
        self.logs = self.cache / "logs"
        self.work = self.cache / "work"

    def marker(self, step: str) -> Path:
        return self.cache / f"{step}.done.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def build_step(step: str, cache: str | os.PathLike, image: str | os.PathLike) -> dict[str, Any]:
    """One preparation step, in this process: ``vfusion3d`` (both VFusion3D layouts, one model), ``triposr``,
    ``sv3d`` (the SGM file). Writes ``<cache>/<step>.done.json`` last; returns its content."""
    import gc

    import torch

    paths = Layout(cache)
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"step": step, "layout_version": LAYOUT_VERSION, "seed": SEED}
    if step in ("vfusion3d", "triposr"):
        info["image_sha256"] = _sha256(Path(image))
        if step == "vfusion3d":
            from orbitmesh.models.lrm import vfusion3d

            model = random_lrm(vfusion3d())
        else:
            from orbitmesh.models.triposr import preset
            from orbitmesh.models.triposr.config import RELEASED_CONFIG_YAML

            model = random_triposr(preset("triposr"))
        info["build_s"] = round(time.perf_counter() - t0, 2)
        info["parameters"] = sum(p.numel() for p in model.parameters())
        t1 = time.perf_counter()
        info["calibration"] = calibrate_on_image(model, image, paths.models, paths.work)
        info["calibrate_s"] = round(time.perf_counter() - t1, 2)
        t1 = time.perf_counter()
        if step == "vfusion3d":
            write_vfusion3d_github(model, paths.github)
            write_vfusion3d_hub(model, paths.hub)
            info["files"] = [str(paths.github), str(paths.hub)]
        else:
            write_triposr_released(model, paths.triposr, RELEASED_CONFIG_YAML)
            info["files"] = [str(paths.triposr)]
        info["write_s"] = round(time.perf_counter() - t1, 2)
        del model
        gc.collect()
    elif step == "sv3d":
        plan = sv3d_sgm_plan()
        info["tensors"] = len(plan)
        info["bytes"] = write_sv3d_sgm(paths.sgm, plan)
        info["files"] = [str(paths.sgm)]
    else:
        raise ValueError(f"unknown step {step!r}")
    info["seconds"] = round(time.perf_counter() - t0, 2)
    paths.marker(step).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _cached(paths: Layout, step: str, image: Path) -> dict[str, Any] | None:
    """The marker of a finished step still valid for this image and layout version, else None."""
    try:
        info = json.loads(paths.marker(step).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("layout_version") != LAYOUT_VERSION or not all(Path(f).exists() for f in info.get("files", [])):
        return None
    if "image_sha256" in info and info["image_sha256"] != _sha256(image):
        return None
    return info


# -- child processes -----------------------------------------------------------------------------------------
def run_child(cmd: Sequence[str], stdout: Path, stderr: Path, env: Mapping[str, str] | None = None
              ) -> tuple[int, float, float]:
    """Run ``cmd`` to the end -> (exit code, wall seconds, peak RSS GB of the child and what it waited for)."""
    stdout.parent.mkdir(parents=True, exist_ok=True)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=dict(env) if env is not None else None)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: stop the child too
            proc.terminate()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
    scale = 1024 ** 3 if sys.platform == "darwin" else 1024 ** 2  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, wall, usage.ru_maxrss / scale


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"  # everything is local: never wait for the network
    return env


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def prepare(step: str, paths: Layout, image: Path, rebuild: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Run a preparation step in a child process unless its cached result is still valid."""
    cached = None if rebuild else _cached(paths, step, image)
    if cached is not None:
        log(f"{step}: cached ({paths.marker(step)})")
        return {**cached, "cached": True}
    log(f"{step}: building the full-size layout ...")
    paths.marker(step).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "orbitmesh.bench.full_size", "--build", step, "--cache", str(paths.cache),
           "--image", str(image)]
    rc, wall, rss = run_child(cmd, paths.logs / f"build-{step}.out", paths.logs / f"build-{step}.err", _child_env())
    if rc != 0:
        raise RuntimeError(f"building {step} failed (exit {rc}):\n{_tail(paths.logs / f'build-{step}.err')}")
    info = json.loads(paths.marker(step).read_text(encoding="utf-8"))
    info.update(cached=False, wall_s=round(wall, 2), peak_rss_gb=round(rss, 3))
    paths.marker(step).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log(f"{step}: built in {wall:.0f} s, peak RSS {rss:.2f} GB")
    return info


def convert_sv3d(paths: Layout, rebuild: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """``orbitmesh convert-sv3d`` on the SGM file, into the model folder (skipped when already converted)."""
    marker = paths.marker("sv3d-convert")
    if not rebuild and marker.is_file() and (paths.sv3d / "sv3d.json").is_file() \
            and marker.stat().st_mtime >= paths.sgm.stat().st_mtime:
        log(f"convert-sv3d: cached ({paths.sv3d})")
        return {**json.loads(marker.read_text(encoding="utf-8")), "cached": True}
    log("convert-sv3d: converting the SGM checkpoint ...")
    cmd = [sys.executable, "-m", "orbitmesh", "convert-sv3d", str(paths.sgm), str(paths.sv3d), "--variant", "sv3d_p"]
    rc, wall, rss = run_child(cmd, paths.logs / "convert-sv3d.out", paths.logs / "convert-sv3d.err", _child_env())
    if rc != 0:
        raise RuntimeError(f"convert-sv3d failed (exit {rc}):\n{_tail(paths.logs / 'convert-sv3d.err')}")
    info = {"seconds": round(wall, 2), "peak_rss_gb": round(rss, 3), "files": [str(paths.sv3d)], "cached": False}
    marker.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log(f"convert-sv3d: {wall:.0f} s, peak RSS {rss:.2f} GB")
    return info


def generate_run(name: str, mode: str, model: str, paths: Layout, image: Path, orbit_steps: int,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """``orbitmesh generate`` in a child process -> one row of ``runs``."""
    glb = paths.glb / f"{name}-{mode}.glb"
    glb.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "orbitmesh", "generate", str(image), "-o", str(glb), "--model", model,
           "--model-dir", str(paths.models), "--output-dir", str(paths.jobs), "--device", "cpu",
           "--progress", "jsonl", "--seed", "42", "--mode", mode]
    if mode == "quality":
        cmd += ["--orbit-steps", str(orbit_steps)]
    log(f"{name} ({mode}): orbitmesh generate --model {model} ...")
    out, err = paths.logs / f"generate-{name}-{mode}.jsonl", paths.logs / f"generate-{name}-{mode}.err"
    rc, wall, rss = run_child(cmd, out, err, _child_env())
    row: dict[str, Any] = {"model": name, "mode": mode, "glb": None, "seconds": {}, "peak_rss_gb": round(rss, 3),
                           "wall_s": round(wall, 2), "exit_code": rc, "command": " ".join(cmd[2:])}
    events = _events(out)
    done = next((e for e in reversed(events) if e.get("event") == "done"), None)
    if rc == 0 and done is not None:
        result = done["result"]
        seconds = {key.split("-", 1)[-1]: round(float(v), 2) for key, v in result.get("timings", {}).items()}
        seconds["total"] = round(sum(seconds.values()), 2)
        row["seconds"] = seconds
        row["job_dir"] = result.get("job_dir")
        row["faces"] = ((result.get("stats") or {}).get("mesh") or {}).get("faces")
        row["warnings"] = result.get("warnings", [])
        if glb.is_file() and glb.read_bytes()[:4] == b"glTF":
            row["glb"] = str(glb)
            row["glb_bytes"] = glb.stat().st_size
        else:
            row["error"] = f"no GLB at {glb}"
    else:
        error = next((e for e in reversed(events) if e.get("event") == "error"), None)
        row["error"] = (f"{error['message']} (fix: {error.get('fix')})" if error else
                        f"exit {rc}: {_tail(err, 8)}")
    log(f"{name} ({mode}): {'GLB ' + row['glb'] if row['glb'] else 'FAILED: ' + row['error']} "
        f"({wall:.0f} s, peak RSS {rss:.2f} GB)")
    return row


def _events(path: Path) -> list[dict]:
    events = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return events
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events


# -- the whole benchmark ----------------------------------------------------------------------------------------
def default_cache() -> Path:
    return Path("~/.cache/orbitmesh/full-size").expanduser()


def default_image() -> Path:
    from orbitmesh.models.registry import preview_model_dir

    return preview_model_dir() / "example.png"


def run(*, only: Iterable[str] | None = None, cache: str | os.PathLike | None = None,
        image: str | os.PathLike | None = None, orbit_steps: int = ORBIT_STEPS, rebuild: bool = False,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prepare the layouts of ``only`` (default every model) and run the commands (see the module docstring)."""
    from orbitmesh.errors import InputError

    wanted = list(dict.fromkeys(only or MODELS))
    unknown = [m for m in wanted if m not in MODELS]
    if unknown:
        raise InputError(f"unknown model(s) {', '.join(unknown)}", fix=f"choose from {', '.join(MODELS)}")
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    paths = Layout(cache or default_cache())
    image = Path(image).expanduser().resolve() if image else default_image()
    if not image.is_file():
        raise InputError(f"image not found: {image}", fix="pass --image PATH")
    paths.cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"cache": str(paths.cache), "image": str(image), "orbit_steps": orbit_steps,
                              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                              "prepare": {}, "runs": []}
    # LRMs first (minutes), SV3D last (tens of minutes); quality mode needs the VFusion3D hub folder as its LRM
    order = [m for m in MODELS if m in wanted]
    if "sv3d" in wanted and "vfusion3d" not in wanted:
        result["prepare"]["vfusion3d"] = prepare("vfusion3d", paths, image, rebuild, log)
    for model in order:
        if model == "vfusion3d":
            result["prepare"]["vfusion3d"] = prepare("vfusion3d", paths, image, rebuild, log)
            result["runs"].append(generate_run("vfusion3d-github", "fast", str(paths.github), paths, image,
                                               orbit_steps, log))
            result["runs"].append(generate_run("vfusion3d-hub", "fast", str(paths.hub), paths, image,
                                               orbit_steps, log))
        elif model == "triposr":
            result["prepare"]["triposr"] = prepare("triposr", paths, image, rebuild, log)
            result["runs"].append(generate_run("triposr", "fast", str(paths.triposr), paths, image, orbit_steps, log))
        else:
            result["prepare"]["sv3d"] = prepare("sv3d", paths, image, rebuild, log)
            result["prepare"]["sv3d-convert"] = convert_sv3d(paths, rebuild, log)
            result["runs"].append(generate_run("sv3d", "quality", str(paths.hub), paths, image, orbit_steps, log))
    return result


def format_table(result: dict[str, Any]) -> str:
    """Seconds per stage and peak RSS, one column per run; then the preparation steps."""
    runs = result["runs"]
    from orbitmesh.pipeline.modes import STAGES

    seen = {s for r in runs for s in r.get("seconds", {}) if s != "total"}
    stages = [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))  # in pipeline order
    header = ["", *(f"{r['model']} ({r['mode']})" for r in runs)]
    rows = [[f"{s} s", *(_num(r.get("seconds", {}).get(s)) for r in runs)] for s in stages]
    rows.append(["stages total s", *(_num(r.get("seconds", {}).get("total")) for r in runs)])
    rows.append(["wall s (process)", *(_num(r.get("wall_s")) for r in runs)])
    rows.append(["peak RSS GB", *(_num(r.get("peak_rss_gb")) for r in runs)])
    rows.append(["faces", *(str(r.get("faces", "-")) for r in runs)])
    rows.append(["GLB", *("yes" if r.get("glb") else "NO: " + str(r.get("error", ""))[:60] for r in runs)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    out = [f"Full-size models end to end, random weights ({result['image']}; orbit steps {result['orbit_steps']})",
           "", line(header), *map(line, rows), "", "preparation:"]
    for step, info in result["prepare"].items():
        state = "cached" if info.get("cached") else f"{_num(info.get('wall_s', info.get('seconds')))} s, " \
                                                    f"peak RSS {_num(info.get('peak_rss_gb'))} GB"
        out.append(f"  {step}: {state}")
    return "\n".join(out)


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="full_size_e2e.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=MODELS, help="models to run (default: all, LRMs first)")
    parser.add_argument("--cache", default=str(default_cache()), help="where the layouts, jobs and GLBs go")
    parser.add_argument("--image", help="input photo (default: the bundled example image)")
    parser.add_argument("--orbit-steps", type=int, default=ORBIT_STEPS, help="SV3D sampling steps in quality mode")
    parser.add_argument("--rebuild", action="store_true", help="build the layouts again even when cached")
    parser.add_argument("--json", action="store_true", help="print one JSON object (last line)")
    parser.add_argument("--build", choices=MODELS, help=argparse.SUPPRESS)  # internal: one preparation step
    args = parser.parse_args(argv)
    if args.build:
        build_step(args.build, args.cache, args.image or default_image())
        return 0
    result = run(only=args.only, cache=args.cache, image=args.image, orbit_steps=args.orbit_steps,
                 rebuild=args.rebuild)
    print(json.dumps(result) if args.json else format_table(result))
    return 0 if all(r.get("glb") for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
