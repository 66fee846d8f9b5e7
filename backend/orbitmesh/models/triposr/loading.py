"""TripoSR checkpoints: the released layout and ours, ViT key names, from_pretrained / save_pretrained.

Accepted sources (:func:`from_pretrained`):
- a hub id (``stabilityai/TripoSR``): ``config.yaml`` + ``model.ckpt`` through huggingface_hub, the
  local cache first; the network only when they are not cached and ``local_files_only`` is False;
- a folder in the released layout: ``config.yaml`` (OmegaConf ``${...}`` interpolation) + ``model.ckpt``
  (a torch state dict, read with ``weights_only=True``);
- our :func:`save_pretrained` folder: ``config.json`` (``model_type: orbitmesh-triposr``, the ViT config
  inside) + ``model.safetensors``.
ViT keys load in transformers-4 names (``encoder.layer.N.attention.attention.query``, as the released
checkpoint) and transformers-5 names (``layers.N.attention.q_proj``); they are renamed to those of the
installed transformers. A missing, unexpected or mis-shaped key is a ModelError naming it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping

import torch

from orbitmesh import atomic
from orbitmesh.errors import ModelError
from orbitmesh.models.lrm.loading import assign_state_dict, check_state_dict, strip_prefix
from orbitmesh.models.triposr.config import (
    MODEL_TYPE,
    OUR_CONFIG,
    OUR_WEIGHTS,
    REFERENCE_CLASSES,
    RELEASED_CONFIG,
    RELEASED_WEIGHTS,
    TripoSRConfig,
    folder_layout,
)

HUB_ID = "stabilityai/TripoSR"
VIT_PREFIX = "image_tokenizer.model."
# Inside a ViT layer: transformers-4 name -> transformers-5 name (the longer v4 name first).
_VIT_LAYER_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_VIT_LAYER = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.(.*)")
_FIX = "check that model.ckpt and config.yaml belong together (TripoSR)"


# -- ViT key names ----------------------------------------------------------------------------------------
def vit_key_style(keys) -> str:
    """'v5' if the ViT layers are named ``layers.N`` (transformers 5), else 'v4' (``encoder.layer.N``)."""
    return "v5" if any(k.startswith(VIT_PREFIX + "layers.") for k in keys) else "v4"


def map_vit_keys(state_dict: Mapping[str, torch.Tensor], style: str) -> dict[str, torch.Tensor]:
    """Rename the image tokenizer's ViT keys to ``style`` ('v4' or 'v5'); other keys pass unchanged."""
    out = {}
    for key, value in state_dict.items():
        m = _VIT_LAYER.fullmatch(key[len(VIT_PREFIX):]) if key.startswith(VIT_PREFIX) else None
        if m is not None:
            index, rest = m.groups()
            for v4, v5 in _VIT_LAYER_RENAMES:  # to v4 first, then to the target
                if rest.startswith(v5):
                    rest = v4 + rest[len(v5):]
                    break
            if style == "v5":
                for v4, v5 in _VIT_LAYER_RENAMES:
                    if rest.startswith(v4):
                        rest = v5 + rest[len(v4):]
                        break
                key = f"{VIT_PREFIX}layers.{index}.{rest}"
            else:
                key = f"{VIT_PREFIX}encoder.layer.{index}.{rest}"
        out[key] = value
    return out


# -- building and loading -----------------------------------------------------------------------------------
def build(config: TripoSRConfig, *, vit_config: Mapping | None = None, base_dir: str | os.PathLike | None = None,
          meta: bool = False):
    """A TripoSR with random weights (or on the meta device, to be loaded by assignment)."""
    from orbitmesh.models.triposr.model import TripoSR

    if meta:
        with torch.device("meta"):
            return TripoSR(config, vit_config=vit_config, base_dir=base_dir)
    return TripoSR(config, vit_config=vit_config, base_dir=base_dir)


def load_into(config: TripoSRConfig, state_dict: Mapping[str, torch.Tensor], *, vit_config: Mapping | None = None,
              base_dir: str | os.PathLike | None = None, dtype: torch.dtype | None = None,
              device: str | torch.device | None = None, consume: bool = False):
    """Build TripoSR for ``config`` and load ``state_dict`` (reference or our key names, either ViT naming) strictly.

    ``consume``: empty ``state_dict`` once its tensors are taken (see :func:`orbitmesh.models.lrm.loading.load_into`).
    """
    model = build(config, vit_config=vit_config, base_dir=base_dir, meta=True)
    expected = model.state_dict()
    sd = map_vit_keys(strip_prefix(state_dict), vit_key_style(expected))
    if consume and isinstance(state_dict, dict):
        state_dict.clear()
    check_state_dict(model, sd, architecture="the TripoSR architecture", fix=_FIX)
    return assign_state_dict(model, sd, dtype=dtype, device=device, mapping="the TripoSR key mapping")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``model.safetensors`` or a torch ``model.ckpt`` (tensors only: ``weights_only=True``)."""
    if path.suffix == ".safetensors":  # read into fresh memory, not mapped (see lrm.loading.read_state_dict)
        from orbitmesh.models.lrm.loading import read_state_dict

        return read_state_dict(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ModelError(f"cannot read the torch checkpoint {path}: {exc}",
                         fix="use the released model.ckpt (a plain state dict) or re-download it") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds no state dict", fix="pass the released TripoSR model.ckpt")
    return dict(obj)


def read_config(path: Path) -> TripoSRConfig:
    """config.yaml (released layout) or our config.json."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read {path}: {exc}", fix="fix or delete it") from exc
        if not isinstance(data, Mapping) or data.get("model_type") != MODEL_TYPE:
            raise ModelError(f"{path} is not a TripoSR config (model_type {MODEL_TYPE!r})",
                             fix="point at a folder saved by OrbitMesh, or one with config.yaml + model.ckpt")
        return TripoSRConfig.from_dict(data)
    return TripoSRConfig.from_yaml(path)


def resolve_files(source: str, *, local_files_only: bool = False, cache_dir: str | os.PathLike | None = None,
                  progress: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """-> (config file, weights file) for a folder or a hub id (see the module docstring)."""
    path = Path(source).expanduser()
    if path.is_dir():
        layout = folder_layout(path)
        if layout == "ours":
            return path / OUR_CONFIG, path / OUR_WEIGHTS
        if layout == "released":
            weights = next(path / n for n in (RELEASED_WEIGHTS, OUR_WEIGHTS) if (path / n).is_file())
            return path / RELEASED_CONFIG, weights
        raise ModelError(f"no TripoSR model in {path} (looked for {RELEASED_CONFIG} + {RELEASED_WEIGHTS}, or "
                         f"{OUR_CONFIG} + {OUR_WEIGHTS})", fix="point at the folder holding those files")
    if path.exists():
        raise ModelError(f"{path} is a file; TripoSR loads from a folder or a hub id",
                         fix="give the folder holding config.yaml + model.ckpt")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        return _download(source, local_files_only, cache_dir, progress)
    raise ModelError(f"model not found: {source}", fix=f"give a model folder or a hub id ({HUB_ID})")


def _download(repo_id: str, local_files_only: bool, cache_dir, progress) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    def get(name: str) -> Path:
        try:  # the cache first: no network round trip when the file is there
            return Path(hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=True))
        except LocalEntryNotFoundError as exc:
            if local_files_only:
                raise ModelError(f"{repo_id}/{name} is not in the local cache and downloads are off",
                                 fix="download it once without local_files_only, or copy the files into a "
                                     "model folder") from exc
        except Exception as exc:  # a corrupt cache entry, a bad repo id
            raise ModelError(f"cannot read {repo_id}/{name} from the cache: {exc}", fix="check the hub id") from exc
        if progress is not None:
            progress(f"downloading {repo_id}/{name}")
        try:
            return Path(hf_hub_download(repo_id, name, cache_dir=cache_dir))
        except Exception as exc:  # repo not found, gated, HTTP errors
            raise ModelError(f"cannot download {repo_id}/{name}: {exc}",
                             fix="check the hub id, your access to it and the network, or download the files "
                                 "by hand into a model folder") from exc

    return get(RELEASED_CONFIG), get(RELEASED_WEIGHTS)


def from_pretrained(source: str | os.PathLike = HUB_ID, *, local_files_only: bool = False,
                    cache_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, progress: Callable[[str], None] | None = None):
    """Load TripoSR (see the module docstring for the accepted sources)."""
    config_path, weights_path = resolve_files(str(source), local_files_only=local_files_only, cache_dir=cache_dir,
                                              progress=progress)
    config = read_config(config_path)
    if progress is not None:
        progress(f"reading {weights_path.name}")
    state_dict = read_weights(weights_path)
    return load_into(config, state_dict, base_dir=config_path.parent, dtype=dtype, device=device, consume=True)


# -- writing ------------------------------------------------------------------------------------------------
def _self_contained(model) -> TripoSRConfig:
    """The model's config with the resolved ViT config inside (a folder that needs nothing else)."""
    c = model.config
    return replace(c, image_tokenizer=replace(c.image_tokenizer, vit_config=dict(model.vit_config)))


def save_pretrained(model, folder: str | os.PathLike) -> None:
    """``config.json`` + ``model.safetensors`` (config also in the safetensors metadata), atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_json = _self_contained(model).to_json()
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic.atomic_path(folder / OUR_WEIGHTS) as tmp:
        save_file(sd, str(tmp), metadata={"orbitmesh_triposr_config": config_json, "format": "pt"})
    atomic.write_text(folder / OUR_CONFIG, config_json + "\n")


def released_config_dict(config: TripoSRConfig, *, vit_folder: str | None = None) -> dict:
    """``config`` in the released config.yaml layout: ``backbone.in_channels`` as ``${tokenizer.num_channels}``,
    our own fields only where they differ from their defaults; ``vit_folder`` replaces the ViT name."""
    default = TripoSRConfig(cond_image_size=config.cond_image_size, tokenizer=config.tokenizer,
                            backbone=config.backbone, post_processor=config.post_processor, decoder=config.decoder,
                            renderer=config.renderer)
    data, base = config.to_dict(), default.to_dict()
    out: dict = {"cond_image_size": data["cond_image_size"]}
    for section in REFERENCE_CLASSES:
        out[f"{section}_cls"] = data[f"{section}_cls"]
        out[section] = dict(data[section])
    tok = out["image_tokenizer"]
    for key in ("vit_config", "pos_interpolation"):
        if tok[key] == base["image_tokenizer"][key]:
            del tok[key]
    if vit_folder is not None:
        tok.pop("vit_config", None)
        tok["pretrained_model_name_or_path"] = vit_folder
    out["backbone"]["in_channels"] = "${tokenizer.num_channels}"
    for key in ("isosurface_threshold", "foreground_ratio", "background_grey"):
        if data[key] != base[key]:
            out[key] = data[key]
    return out


def save_released(model, folder: str | os.PathLike, *, vit_keys: str = "v4") -> None:
    """Write ``config.yaml`` + ``model.ckpt`` as the released model has them (ViT keys in ``vit_keys`` naming).

    A ViT that is not built in gets its config.json in ``folder/vit/`` and the config names that folder.
    """
    import yaml

    from orbitmesh.models.triposr.encoder import BUILTIN_VIT_CONFIGS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = model.config.image_tokenizer.pretrained_model_name_or_path
    vit_folder = None
    if BUILTIN_VIT_CONFIGS.get(name) != model.vit_config:
        vit_folder = "vit"
        atomic.write_text(folder / vit_folder / "config.json",
                          json.dumps({"model_type": "vit", **model.vit_config}, indent=2) + "\n")
    data = released_config_dict(model.config, vit_folder=vit_folder)
    atomic.write_text(folder / RELEASED_CONFIG, yaml.safe_dump(data, sort_keys=False))
    sd = map_vit_keys({k: v.detach().cpu() for k, v in model.state_dict().items()}, vit_keys)
    with atomic.atomic_path(folder / RELEASED_WEIGHTS) as tmp:
        torch.save(sd, tmp)
