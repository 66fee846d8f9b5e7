"""Safetensors files read and written one tensor at a time, for checkpoints larger than the memory one copy needs.

:func:`write_safetensors` writes a file from a plan of (name, dtype, shape, make) entries: the header first
(every shape and offset is known from the plan), then each tensor's bytes as ``make()`` returns it, so only
one tensor is in memory at a time. The format: an 8-byte little-endian header length, the JSON header
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, padded with
spaces to a multiple of 8), then the raw little-endian data, each tensor's bytes contiguous and the
tensors back to back. :class:`LazyCheckpoint` is a read-only mapping over a file whose values are loaded
only when asked for (``shape(name)`` reads the header only).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from orbitmesh import atomic
from orbitmesh.errors import ModelError
from orbitmesh.models.model_files import check_safetensors

DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class Entry:
    """One tensor of a file to write: ``make()`` returns it (dtype and shape as given) when its turn comes."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    make: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(int(s) for s in self.shape) * self.dtype.itemsize


def header_bytes(entries: Sequence[Entry], metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length + JSON header of a file holding ``entries`` in this order."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for e in entries:
        if e.dtype not in DTYPES:
            raise ValueError(f"{e.name}: dtype {e.dtype} cannot be written to safetensors")
        header[e.name] = {"dtype": DTYPES[e.dtype], "shape": [int(s) for s in e.shape],
                          "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: str | os.PathLike, entries: Sequence[Entry],
                      metadata: Mapping[str, str] | None = None) -> int:
    """Write ``entries`` (names unique) to ``path`` atomically, one tensor in memory at a time; returns the bytes
    written. A tensor whose dtype or shape differs from its entry is a ValueError (the header is already out)."""
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names in the plan")
    head = header_bytes(entries, metadata)
    total = len(head)
    with atomic.atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        f.write(head)
        for e in entries:
            t = e.make()
            if t.dtype != e.dtype or tuple(t.shape) != tuple(e.shape):
                raise ValueError(f"{e.name}: made {t.dtype} {tuple(t.shape)}, planned {e.dtype} {e.shape}")
            data = t.detach().cpu().contiguous().reshape(-1)
            if data.numel():  # the raw bytes (little-endian on every platform torch supports), not copied
                f.write(memoryview(data.view(torch.uint8).numpy()))
            total += e.nbytes
            del t, data
    return total


class LazyCheckpoint(Mapping):
    """A safetensors file as a read-only ``{name: tensor}`` mapping that loads a tensor only when asked.

    Each tensor is read with plain file reads into its own fresh memory (not through a memory map, whose
    touched pages would stay in the process's resident memory: reading a 9 GB checkpoint tensor by tensor
    would look like holding all of it). ``shape(name)`` and ``metadata`` come from the header. An unreadable
    or truncated file is a ModelError naming it, with ``fix``. Use as a context manager (or call ``close``).
    """

    def __init__(self, path: str | os.PathLike, fix: str = "download the file again") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"checkpoint not found: {self.path}", fix="check the path")
        try:
            problem = check_safetensors(self.path)  # header readable, tensors end exactly at the end of the file
            if problem is not None:
                raise ValueError(problem)
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            self.metadata: dict[str, str] = dict(header.pop("__metadata__", None) or {})
            self._start = 8 + n
            self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
            for name, t in header.items():
                dtype = _NAMES[t["dtype"]]
                begin, end = (int(x) for x in t["data_offsets"])
                shape = tuple(int(s) for s in t["shape"])
                if end - begin != math.prod(shape) * dtype.itemsize:
                    raise ValueError(f"{name}: {end - begin} bytes for shape {shape} {t['dtype']}")
                self._entries[name] = (dtype, shape, begin, end)
            self._file = open(self.path, "rb")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{self.path.name} is not a readable safetensors file ({exc}); it may be truncated or "
                             "not a checkpoint", fix=fix) from exc

    def __getitem__(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[key]
        data = torch.empty(end - begin, dtype=torch.uint8)
        view = memoryview(data.numpy())
        self._file.seek(self._start + begin)
        done = 0
        while done < len(view):
            got = self._file.readinto(view[done:])
            if not got:
                raise ModelError(f"{self.path.name} ended inside {key}", fix="download the file again")
            done += got
        return data.view(dtype).reshape(shape)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "LazyCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_NAMES = {name: dtype for dtype, name in DTYPES.items()}


def read_safetensors(path: str | os.PathLike, fix: str = "download the file again"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(every tensor, the metadata) of a safetensors file, each tensor read into its own memory (see
    :class:`LazyCheckpoint`): the process holds one copy of the weights, not that plus the file's mapped pages."""
    with LazyCheckpoint(path, fix=fix) as ckpt:
        return {k: ckpt[k] for k in ckpt}, ckpt.metadata
