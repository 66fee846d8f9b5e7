"""LRM checkpoints: reference key names -> ours, strict loading, from_pretrained / save_pretrained.

Accepted sources:
- a folder with ``config.json`` (ours or the reference's generator kwargs) and ``model.safetensors``
  (or a torch checkpoint);
- a ``.safetensors`` file (config from its metadata, a ``config.json`` beside it, or the tensor shapes);
- the GitHub torch checkpoint (a dict with ``model_state_dict``) or a plain torch state dict;
- a hub id such as ``facebook/vfusion3d`` (huggingface_hub download into its cache, with progress;
  ``local_files_only=True`` never touches the network).
Dinov2 keys load in transformers-4 (``attention.attention.query``) and transformers-5
(``attention.q_proj``) naming, whichever the installed transformers does not use is renamed.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch

from orbitmesh import atomic
from orbitmesh.errors import ModelError
from orbitmesh.models.catalogue import LRM_WEIGHT_NAMES
from orbitmesh.models.lrm.config import LRMConfig, vfusion3d

WEIGHT_NAMES = LRM_WEIGHT_NAMES  # the file names a model folder may hold (listed in the catalogue)
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# Wrappers a checkpoint may put in front of every key.
_PREFIXES = ("module.", "model.", "lrm_generator.", "generator.")

# transformers-4 Dinov2 names <-> transformers-5 names (inside encoder.model.encoder.layer.N.)
_DINO_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


# -- key mapping ---------------------------------------------------------------------------
def strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove one wrapper prefix shared by every key (``module.``, ``model.``, ...).

    Safe: an LRM state dict always has several top-level modules, so no prefix is shared by accident.
    """
    sd = dict(state_dict)
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def map_dino_keys(state_dict: Mapping[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename Dinov2 attention keys to the naming ``target_keys`` (our model's) uses."""
    to_v5 = any(".attention.q_proj." in k for k in target_keys)
    out = {}
    for key, value in state_dict.items():
        for old, new in _DINO_RENAMES:
            src, dst = (old, new) if to_v5 else (new, old)
            if f".{src}" in key and key.startswith("encoder."):
                key = key.replace(f".{src}", f".{dst}")
        out[key] = value
    return out


def to_model_keys(state_dict: Mapping[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """A reference (or our own) state dict -> our key names."""
    return map_dino_keys(strip_prefix(state_dict), target_keys)


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                     allow_missing: bool = False, architecture: str = "the LRM architecture",
                     fix: str = "check that the checkpoint and its config belong together (VFusion3D LRM)") -> None:
    """Raise ModelError naming every missing/unexpected key and every shape mismatch.

    ``allow_missing``: the model may have keys the checkpoint lacks (a model grown with new modules).
    ``architecture`` / ``fix`` word the error for other models (TripoSR).
    """
    expected = model.state_dict()
    missing = [] if allow_missing else sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                   for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != tuple(expected[k].shape))
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            shown = ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ModelError(f"the checkpoint does not match {architecture}; " + "; ".join(problems), fix=fix)


# -- config from a state dict -----------------------------------------------------------------
def infer_config(sd: Mapping[str, torch.Tensor], base: LRMConfig | None = None) -> LRMConfig:
    """Read every size the tensors fix from a (mapped) state dict; head counts come from ``base``
    when its widths match, else width // 64 (DINOv2 and VFusion3D both use 64-wide heads)."""
    base = base or vfusion3d()
    try:
        pos = sd["transformer.pos_embed"]
        dim = pos.shape[2]
        low = int(round(math.sqrt(pos.shape[1] / 3)))
        patch = sd["encoder.model.embeddings.patch_embeddings.projection.weight"]
        enc_dim, patch_size = patch.shape[0], patch.shape[2]
        n_pos = sd["encoder.model.embeddings.position_embeddings"].shape[1] - 1
        fc1 = sd["encoder.model.encoder.layer.0.mlp.fc1.weight"]
        dec = sorted(int(m.group(1)) for k in sd if (m := re.match(r"synthesizer\.decoder\.net\.(\d+)\.weight$", k)))
    except KeyError as exc:
        raise ModelError(f"not an LRM checkpoint: missing key {exc.args[0]!r}",
                         fix="pass a VFusion3D checkpoint (model.safetensors or the GitHub .pth)") from None

    def count(pattern: str) -> int:
        return len({m.group(1) for k in sd if (m := re.match(pattern, k))})

    mlp_ratio = fc1.shape[0] // enc_dim if fc1.shape[0] % enc_dim == 0 else fc1.shape[0] / enc_dim
    enc = replace(base.encoder, hidden_size=enc_dim, patch_size=patch_size,
                  num_hidden_layers=count(r"encoder\.model\.encoder\.layer\.(\d+)\."),
                  image_size=int(round(math.sqrt(n_pos))) * patch_size, mlp_ratio=mlp_ratio,
                  num_attention_heads=base.encoder.num_attention_heads if enc_dim == base.encoder.hidden_size
                  else max(1, enc_dim // 64))
    heads = base.transformer_heads if dim == base.transformer_dim else max(1, dim // 64)
    return replace(
        base, encoder=enc, transformer_dim=dim, transformer_heads=heads, triplane_low_res=low,
        triplane_high_res=2 * low, transformer_layers=count(r"transformer\.layers\.(\d+)\."),
        camera_embed_dim=sd["camera_embedder.mlp.0.weight"].shape[0],
        triplane_dim=sd["transformer.deconv.weight"].shape[1],
        mlp_ratio=sd["transformer.layers.0.mlp.0.weight"].shape[0] / dim,
        decoder_hidden_dim=sd["synthesizer.decoder.net.0.weight"].shape[0], decoder_layers=len(dec))


def _reference_base(data: Mapping[str, Any]) -> LRMConfig:
    """The vfusion3d preset with what a reference config.json can say that tensors cannot (heads, samples).

    Sizes are not taken from it: hub config.json files exist whose sizes disagree with their weights.
    """
    base = vfusion3d()
    values = {}
    if isinstance(data.get("transformer_heads"), int) and data.get("transformer_dim"):
        values.update(transformer_heads=data["transformer_heads"], transformer_dim=int(data["transformer_dim"]))
    if isinstance(data.get("rendering_samples_per_ray"), int):
        values["samples_per_ray"] = data["rendering_samples_per_ray"]
    try:
        return replace(base, **values)
    except ModelError:
        return base


# -- reading checkpoints --------------------------------------------------------------------------
def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, safetensors metadata) from a .safetensors or torch file.

    A .safetensors file is read tensor by tensor into fresh memory (not memory-mapped: the model takes these
    tensors over, so the process holds one copy of the weights, not that plus the file's mapped pages).
    """
    if path.suffix == ".safetensors":
        from orbitmesh.models.streaming import read_safetensors

        try:
            return read_safetensors(path)
        except (ModelError, OSError) as exc:
            reason = exc.message if isinstance(exc, ModelError) else exc
            raise ModelError(f"cannot read {path}: {reason}", fix="re-download the file; it may be truncated") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ModelError(f"cannot read the torch checkpoint {path}: {exc}",
                         fix="use the released model.safetensors or a checkpoint saved with tensors only") from exc
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    elif isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds no state dict", fix="pass the VFusion3D checkpoint (model_state_dict)")
    return dict(obj), {}


def _resolve_files(source: str, local_files_only: bool, cache_dir: str | os.PathLike | None
                   ) -> tuple[Path, Path | None]:
    """-> (weights file, config.json or None) for a folder, a file or a hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        for name in WEIGHT_NAMES:
            if (path / name).is_file():
                cfg = path / "config.json"
                return path / name, cfg if cfg.is_file() else None
        raise ModelError(f"no weights in {path} (looked for {', '.join(WEIGHT_NAMES)})",
                         fix="point at the folder holding model.safetensors")
    if path.is_file():
        cfg = path.with_name("config.json")
        return path, cfg if cfg.is_file() else None
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and path.suffix not in (".safetensors", *TORCH_SUFFIXES):
        return _download(source, local_files_only, cache_dir)
    raise ModelError(f"model not found: {source}", fix="give a model folder, a .safetensors/.pth file or a hub id")


def _download(repo_id: str, local_files_only: bool, cache_dir) -> tuple[Path, Path | None]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    def get(name: str) -> Path:
        return Path(hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=local_files_only))

    try:
        weights = get("model.safetensors")
    except LocalEntryNotFoundError as exc:
        if local_files_only:
            raise ModelError(f"{repo_id} is not in the local cache and downloads are off",
                             fix="download it once without local_files_only, or copy it into the model folder") from exc
        raise ModelError(f"cannot download {repo_id}: {exc}", fix="check the network/proxy, or download the files "
                         "by hand into the model folder") from exc
    except Exception as exc:  # repo not found, gated, HTTP errors
        raise ModelError(f"cannot get {repo_id}/model.safetensors: {exc}",
                         fix="check the hub id, your access to it, and the network") from exc
    try:
        config = get("config.json")
    except (EntryNotFoundError, LocalEntryNotFoundError, Exception):
        config = None
    return weights, config


# -- public API -----------------------------------------------------------------------------------------
def build(config: LRMConfig, *, meta: bool = False):
    """An LRM with random weights (or on the meta device, to be loaded by assignment)."""
    from orbitmesh.models.lrm.model import LRM

    if meta:
        with torch.device("meta"):
            return LRM(config)
    return LRM(config)


def load_into(config: LRMConfig, state_dict: Mapping[str, torch.Tensor], *, dtype: torch.dtype | None = None,
              device: str | torch.device | None = None, consume: bool = False):
    """Build the LRM for ``config`` and load ``state_dict`` (reference or our key names) strictly.

    ``consume``: empty ``state_dict`` (a dict the caller has no more use for) once its tensors are taken, so the
    loaded copy is freed tensor by tensor while the model makes its own: one copy of the weights in memory.
    """
    model = build(config, meta=True)
    sd = to_model_keys(state_dict, set(model.state_dict()))
    if consume and isinstance(state_dict, dict):
        state_dict.clear()
    check_state_dict(model, sd)
    return assign_state_dict(model, sd, dtype=dtype, device=device, mapping="the checkpoint mapping")


def assign_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], *, dtype=None, device=None,
                      mapping: str) -> torch.nn.Module:
    """Load a checked ``sd`` into a meta-device ``model`` (strict, by assignment), then dtype/device, eval mode.

    Consumes ``sd``: it is emptied once the model holds its tensors, so each tensor read from the file is freed
    as soon as the model has its own copy (peak: one copy of the weights, not two). ``mapping`` names the key
    mapping a parameter left on the meta device would be a bug in.
    """
    model.load_state_dict(sd, strict=True, assign=True)
    sd.clear()
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            # Own, freshly allocated (aligned) memory: tensors read from a file may sit at any
            # offset, and CPU GEMM kernels then round differently than for the saved model.
            t.data = t.data.clone(memory_format=torch.contiguous_format)
    stray = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if stray:
        raise ModelError(f"parameters left unloaded: {stray[:5]}", fix=f"this is a bug in {mapping}")
    model = model.float() if dtype is None else model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


def from_pretrained(source: str | os.PathLike, *, local_files_only: bool = False, dtype: torch.dtype | None = None,
                    device: str | torch.device | None = None, config: LRMConfig | None = None,
                    cache_dir: str | os.PathLike | None = None, progress=None):
    """Load an LRM (see the module docstring for the accepted sources)."""
    weights, config_path = _resolve_files(str(source), local_files_only, cache_dir)
    if progress is not None:
        progress(f"reading {weights.name}")
    raw, meta = read_state_dict(weights)
    base = None
    if config is None and meta.get("orbitmesh_lrm_config"):
        config = LRMConfig.from_dict(json.loads(meta["orbitmesh_lrm_config"]))
    if config is None and config_path is not None:
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{config_path} is not valid JSON: {exc}", fix="fix or delete it") from exc
        if data.get("model_type") == "orbitmesh-lrm":
            config = LRMConfig.from_dict(data)
        else:
            base = _reference_base(data)
    if config is None:
        # The reference's checkpoints carry no (trustworthy) config: read the sizes off the tensors.
        probe_keys = set(build(vfusion3d(), meta=True).state_dict())
        config = infer_config(to_model_keys(raw, probe_keys), base)
    return load_into(config, raw, dtype=dtype, device=device, consume=True)


def save_pretrained(model, folder: str | os.PathLike) -> None:
    """``config.json`` + ``model.safetensors`` (config also in the safetensors metadata), atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_json = model.config.to_json()
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic.atomic_path(folder / "model.safetensors") as tmp:
        save_file(sd, str(tmp), metadata={"orbitmesh_lrm_config": config_json, "format": "pt"})
    atomic.write_text(folder / "config.json", config_json + "\n")
