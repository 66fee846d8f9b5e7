"""``orbitmesh doctor``: what this machine has, what is missing, and how to fix it."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from importlib import metadata

from orbitmesh import __version__
from orbitmesh.cli.common import add_settings_args, settings_from_args

# (distribution, import name, what it is for, how to install)
PARTS = (
    ("torch", "torch", "all models", "pip install torch (CUDA build from pytorch.org for a GPU)"),
    ("diffusers", "diffusers", "SV3D orbit views, text-to-image", "pip install diffusers"),
    ("transformers", "transformers", "DINOv2/CLIP encoders", "pip install transformers"),
    ("safetensors", "safetensors", "loading weights", "pip install safetensors"),
    ("huggingface_hub", "huggingface_hub", "downloading models", "pip install huggingface_hub"),
    ("numpy", "numpy", "mesh processing", "pip install numpy"),
    ("pillow", "PIL", "images", "pip install pillow"),
    ("scikit-image", "skimage", "marching cubes", "pip install scikit-image"),
    ("pymeshlab", "pymeshlab", "mesh cleaning and decimation", "pip install pymeshlab"),
    ("xatlas", "xatlas", "UV unwrapping", "pip install xatlas"),
    ("rembg", "rembg", "background removal (optional; a built-in fallback exists)", "pip install rembg"),
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("doctor", help="print the environment, devices, models and what is missing")
    add_settings_args(parser)
    parser.set_defaults(func=run)


def collect(settings) -> dict:
    """Everything doctor prints, as a dict (the server's /health reuses parts of it)."""
    info: dict = {"orbitmesh": __version__, "python": sys.version.split()[0],
                  "platform": platform.platform(), "parts": {}, "missing": []}
    for dist, module, purpose, fix in PARTS:
        if importlib.util.find_spec(module) is None:
            info["parts"][dist] = None
            info["missing"].append({"part": dist, "for": purpose, "fix": fix})
        else:
            try:
                info["parts"][dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                info["parts"][dist] = "installed"
    info["device"] = device_info(settings.device)
    info["settings"] = settings.to_dict()
    info["model_dir_exists"] = settings.model_dir.is_dir()
    from orbitmesh.pipeline.text_to_image import default_model_info

    info["text_to_image"] = default_model_info(settings.model_dir)
    if not info["model_dir_exists"]:
        info["missing"].append({"part": "model folder", "for": f"models ({settings.model_dir})",
                                "fix": "create it, or set model_dir in the config / ORBITMESH_MODEL_DIR"})
    return info


def device_info(requested: str = "auto") -> dict:
    if importlib.util.find_spec("torch") is None:
        return {"device": "unavailable (torch missing)"}
    import torch

    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
            "cuda_build": torch.version.cuda, "requested": requested}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        info.update(device="cuda", gpu=props.name, vram_total_gb=round(total / 2**30, 2),
                    vram_free_gb=round(free / 2**30, 2))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        info.update(device="mps")
    else:
        info.update(device="cpu", cpu_threads=torch.get_num_threads(),
                    note="no GPU found: models run on the CPU (slow for real sizes)")
    return info


def run(args: argparse.Namespace) -> int:
    info = collect(settings_from_args(args))
    print(f"OrbitMesh {info['orbitmesh']}  Python {info['python']}  {info['platform']}")
    dev = info["device"]
    print("device:   " + ", ".join(f"{k}={v}" for k, v in dev.items()))
    print("settings: " + ", ".join(f"{k}={v}" for k, v in info["settings"].items()))
    t2i = info["text_to_image"]
    print(f"text-to-image default: {t2i['id']} ({t2i['licence']}; "
          f"{'installed' if t2i['available'] else 'not downloaded'})")
    print("parts:")
    for name, version in info["parts"].items():
        print(f"  {name:<16} {version or 'MISSING'}")
    if info["missing"]:
        print("missing:")
        for m in info["missing"]:
            print(f"  {m['part']} (for {m['for']}): {m['fix']}")
    else:
        print("nothing missing")
    return 0
