"""``orbitmesh doctor``: what this machine has, what is missing, and how to fix it.

Runs without torch, diffusers or transformers (it is how a user finds out they are missing):
packages are probed with ``find_spec``, the models through the catalogue (disk only), and the
device probe imports torch only when it is there.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import re
import sys
from importlib import metadata

from orbitmesh import __version__
from orbitmesh.cli.common import add_settings_args, settings_from_args

# (distribution, import name, what it is for, a note on installing it). The version to install
# comes from orbitmesh's own requirements (pyproject.toml).
PARTS = (
    ("torch", "torch", "all models", "for a GPU, the CUDA build from pytorch.org"),
    ("diffusers", "diffusers", "SV3D orbit views, text-to-image", ""),
    ("transformers", "transformers", "DINOv2/CLIP encoders", ""),
    ("safetensors", "safetensors", "loading weights", ""),
    ("huggingface_hub", "huggingface_hub", "downloading models", ""),
    ("numpy", "numpy", "mesh processing", ""),
    ("pillow", "PIL", "images", ""),
    ("scikit-image", "skimage", "marching cubes", ""),
    ("pymeshlab", "pymeshlab", "mesh cleaning and decimation", ""),
    ("xatlas", "xatlas", "UV unwrapping", ""),
    ("rembg", "rembg", "background removal (optional; a built-in fallback exists)", ""),
)
# What each kind's default model is for, when it is missing (the reconstruction model: the first of the
# catalogue's preference order this machine may use, see _reconstruction_model).
MODEL_PURPOSE = {"lrm": "real objects (until then the bundled preview model is used)",
                 "video": "quality mode", "text_to_image": "text to 3D (--prompt)"}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("doctor", help="print the environment, devices, models and what is missing")
    add_settings_args(parser)
    parser.set_defaults(func=run)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_command(dist: str, note: str = "") -> str:
    """``pip install "<requirement>"`` with the version orbitmesh asks for (``torch>=2.1``)."""
    requirement = dist
    try:
        for req in metadata.requires("orbitmesh") or []:
            spec = req.split(";", 1)[0].strip()
            if _normal(re.split(r"[\s<>=!~\[(]", spec, maxsplit=1)[0]) == _normal(dist):
                requirement = spec
                break
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        pass
    return f'pip install "{requirement}"' + (f" ({note})" if note else "")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or stubbed-out package
        return False


def collect(settings) -> dict:
    """Everything doctor prints, as a dict."""
    from orbitmesh.device import device_info
    from orbitmesh.models import catalogue

    info: dict = {"orbitmesh": __version__, "python": sys.version.split()[0],
                  "platform": platform.platform(), "parts": {}, "missing": []}
    for dist, module, purpose, note in PARTS:
        if not _installed(module):
            info["parts"][dist] = None
            info["missing"].append({"part": dist, "for": purpose, "fix": install_command(dist, note)})
        else:
            try:
                info["parts"][dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                info["parts"][dist] = "installed"
    if info["parts"].get("pymeshlab"):  # installed, but its Linux wheel needs glibc 2.35 to load
        from orbitmesh.mesh.decimate import _PYMESHLAB_PROBLEM, load_pymeshlab

        if load_pymeshlab() is None:
            info["parts"]["pymeshlab"] = None
            info["missing"].append({"part": f"pymeshlab (installed, cannot load: {_PYMESHLAB_PROBLEM[0]})",
                                    "for": "the decimation fallback (meshes are still made without it)",
                                    "fix": "on Linux it needs glibc 2.35 or newer (`ldd --version`)"})
    info["device"] = device_info(settings.device)
    info["settings"] = settings.to_dict()
    model_dir = settings.model_dir
    info["model_dir_exists"] = model_dir.is_dir()
    if not info["model_dir_exists"]:
        info["missing"].append({"part": "model folder", "for": f"models ({model_dir})",
                                "fix": "create it, or set model_dir in the config / ORBITMESH_MODEL_DIR"})
    info["models"] = []
    info["commercial_only"] = settings.commercial_only
    for entry in catalogue.models():
        available = entry.is_available(model_dir)
        info["models"].append({"name": entry.name, "kind": entry.kind, "licence": entry.licence,
                               "commercial": entry.commercial, "condition": entry.condition,
                               "available": available, "default": entry.default,
                               "allowed": not settings.commercial_only or entry.commercial != "no"})
        if entry.kind == "lrm":
            continue  # the reconstruction model is reported below, by what a job would use
        if entry.default and not available:
            info["missing"].append({"part": f"{catalogue.KINDS[entry.kind]} model {entry.name}",
                                    "for": MODEL_PURPOSE[entry.kind], "fix": entry.how_to_get(model_dir)})
    info["reconstruction_model"] = _reconstruction_model(settings, info["missing"])
    info["text_to_image"] = next(m for m in info["models"] if m["kind"] == "text_to_image" and m["default"])
    return info


def _reconstruction_model(settings, missing: list[dict]) -> dict:
    """What a job without --model would use ({name, licence, commercial} or {error, fix}); a missing real
    model (none of the preference order this machine may use) is added to ``missing``."""
    from orbitmesh.errors import ModelError
    from orbitmesh.models import catalogue
    from orbitmesh.models.registry import PREVIEW, resolve_lrm_source

    try:
        source = resolve_lrm_source(None, settings.model_dir, commercial_only=settings.commercial_only,
                                    default=settings.default_model)
    except ModelError as exc:
        missing.append({"part": "reconstruction model", "for": MODEL_PURPOSE["lrm"], "fix": exc.fix})
        return {"error": exc.message, "fix": exc.fix}
    if source.name == PREVIEW and not settings.default_model:
        allowed = [n for n in catalogue.LRM_PREFERENCE
                   if not settings.commercial_only or catalogue.CATALOGUE[n].commercial != "no"]
        entry = catalogue.CATALOGUE[allowed[0]]
        fix = entry.how_to_get(settings.model_dir)
        free = [n for n in allowed if catalogue.CATALOGUE[n].commercial == "yes"]
        if entry.commercial != "yes" and free:  # name the model whose meshes may be sold too
            other = catalogue.CATALOGUE[free[0]]
            fix += (f"; for commercial use {other.name} ({other.licence}): "
                    f"`orbitmesh generate IMAGE --model {other.name}`")
        missing.append({"part": f"{catalogue.KINDS['lrm']} model {entry.name}", "for": MODEL_PURPOSE["lrm"],
                        "fix": fix})
    return source.licence_record()


def run(args: argparse.Namespace) -> int:
    info = collect(settings_from_args(args))
    print(f"OrbitMesh {info['orbitmesh']}  Python {info['python']}  {info['platform']}")
    dev = info["device"]
    print("device:   " + ", ".join(f"{k}={v}" for k, v in dev.items()))
    print("settings: " + ", ".join(f"{k}={v}" for k, v in info["settings"].items()))
    lrm = info["reconstruction_model"]
    print("reconstruction default: " + (f"{lrm['name']} ({lrm['licence']}; commercial use: {lrm['commercial']})"
                                        if "name" in lrm else f"none ({lrm['error']})"))
    t2i = info["text_to_image"]
    print(f"text-to-image default: {t2i['name']} ({t2i['licence']}; commercial use: {t2i['commercial']}; "
          f"{'installed' if t2i['available'] else 'not downloaded'})")
    print("parts:")
    for name, version in info["parts"].items():
        print(f"  {name:<16} {version or 'MISSING'}")
    print("models:")
    width = max(len(m["name"]) for m in info["models"])
    print(f"  {'name':<{width}}  {'kind':<13}  available  commercial   licence")
    for m in info["models"]:
        refused = "" if m["allowed"] else "  [refused: commercial_only]"
        print(f"  {m['name']:<{width}}  {m['kind']:<13}  {'yes' if m['available'] else 'no':<9}  "
              f"{m['commercial']:<11}  {m['licence']}{refused}")
    for condition in dict.fromkeys(m["condition"] for m in info["models"] if m["condition"]):
        names = ", ".join(m["name"] for m in info["models"] if m["condition"] == condition)
        print(f"  conditional ({names}): {condition}")
    if info["commercial_only"]:
        print("  commercial_only is on: models marked 'no' (or unknown) are refused, 'conditional' ones run "
              "with a warning")
    if info["missing"]:
        print("missing:")
        for m in info["missing"]:
            print(f"  {m['part']} (for {m['for']}): {m['fix']}")
    else:
        print("nothing missing")
    return 0
