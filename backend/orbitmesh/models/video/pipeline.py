"""SV3D pipeline object: UNet + VAE + CLIP image encoder, loading and the model-level steps.

Sources ``SV3DPipeline.from_pretrained`` accepts:

* a converted folder (``orbitmesh convert-sv3d``): ``unet/``, ``vae/``, ``image_encoder/``, ``sv3d.json``;
* an SGM checkpoint file (``sv3d_p.safetensors`` / ``sv3d_u.safetensors``), converted in memory;
* the hub id ``stabilityai/sv3d`` (gated: accept the licence on the model page and log in with a
  token); the file ``<variant>.safetensors`` is fetched into the hub cache at load time.

Known models: ``sv3d_p`` / ``sv3d_u`` in :mod:`orbitmesh.models.catalogue` (hub id, files, licence,
where a local copy may be).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from orbitmesh.errors import ModelError
from orbitmesh.models import catalogue

SV3D_NAMES = tuple(e.name for e in catalogue.models("video"))
HUB_ID = str(catalogue.get("sv3d_p").hub_id)  # every SV3D variant is a file of this (gated) repo


def gated_fix() -> str:
    info = catalogue.get("sv3d_p")
    return (f"open https://huggingface.co/{HUB_ID}, accept the licence ({info.licence}), create a read token at "
            "https://huggingface.co/settings/tokens and run `hf auth login` (or set HF_TOKEN); "
            "or download sv3d_p.safetensors yourself and pass its path / convert it with `orbitmesh convert-sv3d`")


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class SV3DPipeline:
    unet: Any  # SV3DUNet
    vae: Any  # diffusers AutoencoderKL
    image_encoder: Any  # transformers CLIPVisionModelWithProjection
    variant: str = "sv3d_p"
    scale_factor: float = 0.18215
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    offload: bool = False  # keep models on the CPU and move each to the device only while it runs

    # ------------------------------------------------------------------ loading

    def __post_init__(self) -> None:
        if self.offload:
            self.enable_low_memory()

    def enable_low_memory(self) -> None:
        """Offload mode: models live on the CPU; the UNet's feed-forwards run in chunks (diffusers)."""
        self.offload = True
        self.unet.enable_forward_chunking()

    @classmethod
    def from_pretrained(cls, source: str | Path, variant: str | None = None, device: str = "cpu",
                        dtype: torch.dtype = torch.float32, offload: bool = False,
                        cache_dir: str | Path | None = None) -> "SV3DPipeline":
        """Load from a converted folder, an SGM ``.safetensors`` file or the hub id (see module doc)."""
        path = Path(source).expanduser()
        if path.is_dir():
            parts = _load_folder(path)
        elif path.is_file():
            parts = _load_sgm_file(path, variant)
        elif str(source) == HUB_ID or str(source) in SV3D_NAMES:
            name = variant or (str(source) if str(source) in SV3D_NAMES else catalogue.DEFAULTS["video"])
            parts = _load_sgm_file(_hub_download(name, cache_dir), name)
        else:
            raise ModelError(f"SV3D model not found: {source}",
                             fix=f"give a converted folder, an sv3d_p/sv3d_u .safetensors file or {HUB_ID!r}")
        if variant and parts["variant"] != variant:
            raise ModelError(f"{source} is {parts['variant']}, expected {variant}",
                             fix=f"use the {variant} checkpoint or choose the model {parts['variant']}")
        pipe = cls(**parts, device=device, dtype=dtype, offload=offload)
        return pipe.to(device, dtype)

    def to(self, device: str, dtype: torch.dtype | None = None) -> "SV3DPipeline":
        self.device, self.dtype = device, dtype or self.dtype
        for model in self.models():
            model.to("cpu" if self.offload else device)
            if next(model.parameters()).dtype != self.dtype:
                model.to(dtype=self.dtype)
        return self

    def models(self) -> tuple[Any, Any, Any]:
        return self.unet, self.vae, self.image_encoder

    def on_device(self, model):
        """Context manager: the model on the device while it runs (offload mode moves it back)."""
        pipe = self

        class _Ctx:
            def __enter__(self):
                if pipe.offload:
                    model.to(pipe.device)
                return model

            def __exit__(self, *exc):
                if pipe.offload:
                    model.to("cpu")
                    if pipe.device == "cuda":
                        torch.cuda.empty_cache()
                return False

        return _Ctx()

    # ------------------------------------------------------------------ model steps

    @property
    def has_cameras(self) -> bool:
        return self.unet.adm_in_channels > 256

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1, D) CLIP image embedding (SGM FrozenOpenCLIPImageEmbedder:
        bicubic antialiased resize to the encoder size, [0, 1], CLIP mean/std)."""
        size = int(self.image_encoder.config.image_size)
        x = torch.nn.functional.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=True,
                                            antialias=True)
        x = (x + 1.0) / 2.0
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        with self.on_device(self.image_encoder) as enc:
            emb = enc(pixel_values=((x - mean) / std).to(self.device, self.dtype)).image_embeds
        return emb[:, None, :].float()

    @torch.no_grad()
    def encode_latent(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 4, H/8, W/8): the VAE encoder's mode, unscaled (SGM concat latent)."""
        with self.on_device(self.vae) as vae:
            return vae.encode(image.to(self.device, self.dtype)).latent_dist.mode().float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int = 7,
               on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(N, 4, h, w) sampled latents -> (N, 3, 8h, 8w) in [-1, 1], ``chunk`` frames at a time."""
        out = []
        chunk = max(1, int(chunk))
        with self.on_device(self.vae) as vae:
            for start in range(0, latents.shape[0], chunk):
                z = latents[start:start + chunk].to(self.device, self.dtype) / self.scale_factor
                out.append(vae.decode(z).sample.float().cpu())
                if on_chunk is not None:
                    on_chunk(min(start + chunk, latents.shape[0]), latents.shape[0])
        return torch.cat(out)


# ---------------------------------------------------------------------- loaders


def resolve_source(model: str | Path, model_dir: str | Path | None = None) -> tuple[str | Path, str | None]:
    """A model argument -> (source for ``from_pretrained``, expected variant).

    A path is used as is; a name (``sv3d_p`` / ``sv3d_u``) is looked up in ``model_dir`` as a
    converted folder ``<name>/``, a file ``<name>.safetensors`` or in the hub cache
    ``<model_dir>/hub``; else it means the hub id (downloaded when loaded).
    """
    name = str(model)
    if name in SV3D_NAMES:
        entry = catalogue.get(name, "video")
        if model_dir is not None:
            local = entry.source.local_path(model_dir)
            cached = local if local is not None else entry.cached_file(model_dir)
            if cached is not None:
                return cached, name
        return HUB_ID, name
    path = Path(name).expanduser()
    if path.exists():
        return path, None
    if name == HUB_ID:
        return HUB_ID, None
    raise ModelError(f"unknown SV3D model {name!r}",
                     fix=f"use {', '.join(SV3D_NAMES)}, {HUB_ID}, a converted folder or an SGM .safetensors file")


def _load_folder(path: Path) -> dict[str, Any]:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    from orbitmesh.models.video.unet import SV3DUNet

    info_path = path / "sv3d.json"
    missing = [p for p in ("sv3d.json", "unet", "vae", "image_encoder") if not (path / p).exists()]
    if missing:
        raise ModelError(f"{path} is not a converted SV3D folder (missing {', '.join(missing)})",
                         fix="create it with `orbitmesh convert-sv3d sv3d_p.safetensors OUT_DIR`")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    try:
        unet = load_diffusers_model(SV3DUNet, path / "unet")
        vae = load_diffusers_model(AutoencoderKL, path / "vae")
        clip = CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder")
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"could not load the converted SV3D folder {path}: {exc}",
                         fix="re-run `orbitmesh convert-sv3d` to recreate it") from exc
    return {"unet": unet.eval(), "vae": vae.eval(), "image_encoder": clip.eval(),
            "variant": info.get("variant", "sv3d_p"), "scale_factor": float(info.get("scale_factor", 0.18215))}


def load_diffusers_model(cls, folder: Path):
    """A diffusers model from its ``save_pretrained`` folder with one copy of the weights in memory: built on the
    meta device, then loaded strictly by assignment of the memory-mapped tensors. (diffusers without accelerate
    builds the model with random weights, then copies the file's weights in: 12 GB for a 6 GB float32 UNet, and
    minutes of random init.) Other weight files go to diffusers."""
    from safetensors.torch import load_file

    from orbitmesh.models.video.convert import check_shapes

    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        return cls.from_pretrained(folder)
    with torch.device("meta"):
        model = cls.from_config(cls.load_config(folder))
    state = load_file(str(weights))  # memory-mapped, not copied: the weights are the file's (evictable) pages
    check_shapes(model.state_dict(), {k: tuple(v.shape) for k, v in state.items()}, folder.name)
    model.load_state_dict(state, strict=True, assign=True)
    stray = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if stray:
        raise ModelError(f"{folder}: tensors left unloaded: {stray[:5]}", fix="re-run `orbitmesh convert-sv3d`")
    return model.eval()


def _load_sgm_file(path: Path, expected: str | None) -> dict[str, Any]:
    from orbitmesh.models.video.convert import (
        SCALE_FACTOR,
        UNET_PREFIX,
        check_kind,
        clip_from_checkpoint,
        read_checkpoint,
        unet_from_sgm,
        vae_from_checkpoint,
    )

    ckpt, metadata = read_checkpoint(path)
    variant = check_kind(ckpt, path.name, expected)
    sgm = json.loads(metadata["unet_config"]) if "unet_config" in metadata else None
    unet = unet_from_sgm({k[len(UNET_PREFIX):]: v for k, v in ckpt.items() if k.startswith(UNET_PREFIX)}, sgm)
    return {"unet": unet, "vae": vae_from_checkpoint(ckpt), "image_encoder": clip_from_checkpoint(ckpt),
            "variant": variant, "scale_factor": SCALE_FACTOR}


def _hub_download(variant: str, cache_dir: str | Path | None) -> Path:
    """Fetch ``<variant>.safetensors`` from the gated hub repo (only when asked to load by hub id)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    filename = catalogue.get(variant, "video").files[0]
    try:
        return Path(hf_hub_download(HUB_ID, filename, cache_dir=cache_dir))
    except GatedRepoError as exc:
        raise ModelError(f"{HUB_ID} is gated: your account has not accepted its licence or no token is set",
                         fix=gated_fix()) from exc
    except LocalEntryNotFoundError as exc:
        raise ModelError(f"cannot download {HUB_ID}/{filename}: no connection to the hub and no cached copy",
                         fix="connect to the internet once, or " + gated_fix().split("; or ", 1)[1]) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelError(f"access to {HUB_ID} was refused ({status}): it needs an accepted licence and a token",
                             fix=gated_fix()) from exc
        raise ModelError(f"downloading {HUB_ID}/{filename} failed: {exc}", fix="try again later") from exc
