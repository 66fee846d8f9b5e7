"""Device and dtype resolution (imports torch lazily)."""

from __future__ import annotations

from orbitmesh.errors import InputError


def resolve_device(name: str = "auto") -> str:
    """'auto' -> cuda if available, else mps, else cpu. An explicit device must exist."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available",
                         fix="use --device auto or cpu, or install a CUDA build of torch")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' requested but Metal is not available", fix="use --device auto or cpu")
    return name


def resolve_dtype(name: str, device: str):
    """'auto' -> bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU."""
    import torch

    if name == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
