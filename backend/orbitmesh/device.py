"""Device and dtype resolution, and what devices this machine has (imports torch lazily)."""

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


def device_info(requested: str = "auto") -> dict:
    """What compute this machine offers: {device, torch, cuda_available, cuda_build, requested, and gpu,
    vram_total_gb, vram_free_gb on CUDA, cpu_threads on the CPU}; {device: 'unavailable (torch missing)'}
    without torch. For doctor and the server's /health."""
    import importlib.util

    try:
        if importlib.util.find_spec("torch") is None:
            return {"device": "unavailable (torch missing)"}
        import torch
    except (ImportError, ValueError):  # ValueError: a stub module without a spec
        return {"device": "unavailable (torch missing)"}

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
