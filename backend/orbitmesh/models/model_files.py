"""Checking model files: digests against what a source publishes, whole safetensors files, and whether a file
or folder on disk is a catalogue model's layout (what `orbitmesh models install` accepts).

Used by :mod:`orbitmesh.models.manager`; cheap to import (no torch, no hub library).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from orbitmesh.errors import InputError, ModelError
from orbitmesh.models.catalogue import ModelEntry
from orbitmesh.models.fetchers import RemoteFile

_SKIP_ON_INSTALL = {".cache", ".git", ".DS_Store", "Thumbs.db"}  # hub/OS bookkeeping not copied by install


def file_digests(path: Path, *, sha256: bool = False, md5: bool = False, git_sha1: bool = False) -> dict[str, str]:
    """The asked-for digests of a file, in one read: sha256, md5, git_sha1 (git's blob id)."""
    hashes: dict[str, Any] = {}
    if sha256:
        hashes["sha256"] = hashlib.sha256()
    if md5:
        hashes["md5"] = hashlib.md5(usedforsecurity=False)
    if git_sha1:
        hashes["git_sha1"] = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    if hashes:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                for h in hashes.values():
                    h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def verify(path: Path, expected: RemoteFile) -> str | None:
    """Why ``path`` is not ``expected`` (size, then each published hash), or None when it matches."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"{size} bytes instead of {expected.size}"
    want = {k: v.lower() for k, v in (("sha256", expected.sha256), ("md5", expected.md5),
                                      ("git_sha1", expected.git_sha1)) if v}
    got = file_digests(path, **{k: True for k in want})
    for kind, value in want.items():
        if got[kind] != value:
            return f"{kind} {got[kind]} instead of {value}"
    return None


def check_safetensors(path: Path) -> str | None:
    """Why a .safetensors file is not whole (bad header, truncated, trailing bytes), or None. Reads the
    header only: its tensors' byte ranges must end exactly at the end of the file."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size or n > 100 << 20:
                return "its header length is wrong (not a safetensors file, or truncated)"
            header = json.loads(f.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        return f"its header cannot be read ({exc})"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    data = size - 8 - n
    if ends and max(ends) != data:
        return f"it holds {data} data bytes but its tensors need {max(ends)} (truncated or damaged)"
    return None


# ----- install sources ------------------------------------------------------------------------------------

def walk_files(folder: Path) -> list[tuple[Path, str]]:
    """(file, path relative to ``folder``) of every file to copy, hub/OS bookkeeping left out."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_ON_INSTALL)
        for name in sorted(files):
            if name not in _SKIP_ON_INSTALL:
                path = Path(root) / name
                out.append((path, path.relative_to(folder).as_posix()))
    return out


def install_layout(entry: ModelEntry, src: Path) -> tuple[str, bool, list[tuple[Path, str]]]:
    """(target path relative to the model folder, whether it is a folder, [(source file, relative name)])
    for installing ``src``; InputError when ``src`` is not this model's layout."""
    source = entry.source
    marker = source.local_marker
    known = ", ".join(dict.fromkeys((*entry.files, *marker)))
    if marker:  # a folder model (LRM, diffusers pipeline, rembg)
        if src.is_dir():
            if not any((src / name).is_file() for name in marker):
                raise InputError(f"{src} does not hold a {entry.name} model: none of {', '.join(marker)} is in it",
                                 fix=f"pass the folder that holds {known}")
            return str(source.install_path), True, walk_files(src)
        if src.name in marker and entry.kind != "text_to_image":
            return str(source.install_path), True, [(src, src.name)]
        if entry.kind == "background_removal" and src.suffix.lower() == ".onnx":
            return str(source.install_path), True, [(src, entry.files[0])]
        raise InputError(f"{src} is not a {entry.name} model file (expected {known}, or a folder holding it)",
                         fix=f"pass the folder that holds {known}")
    weights = entry.files[0]  # a one-file model (SV3D): the file, or a folder holding it, or a converted folder
    if src.is_file() and src.name == weights:
        return str(source.install_path), False, [(src, weights)]
    if src.is_dir() and (src / weights).is_file():
        return str(source.install_path), False, [(src / weights, weights)]
    if src.is_dir() and (src / "sv3d.json").is_file():
        try:
            variant = json.loads((src / "sv3d.json").read_text(encoding="utf-8")).get("variant")
        except (OSError, ValueError) as exc:
            raise InputError(f"{src / 'sv3d.json'} cannot be read: {exc}",
                             fix="re-run `orbitmesh convert-sv3d`") from exc
        if variant not in (None, entry.name):
            raise InputError(f"{src} is a converted {variant} folder, not {entry.name}",
                             fix=f"run `orbitmesh models install {variant} {src}`")
        return entry.name, True, walk_files(src)
    raise InputError(f"{src} is not {weights} (nor a folder holding it or a converted {entry.name} folder)",
                     fix=f"pass the path of {weights}")


def hub_etag(src_root: Path, rel: str) -> str | None:
    """The sha256 `hf download --local-dir` recorded for a file (``.cache/huggingface/download/<rel>.metadata``:
    commit, etag, time); None when there is none or it is not a sha256 (a git blob's etag)."""
    meta = src_root / ".cache" / "huggingface" / "download" / f"{rel}.metadata"
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    etag = lines[1].strip().strip('"').lower() if len(lines) > 1 else ""
    return etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None


def check_install_source(entry: ModelEntry, src: Path) -> tuple[str, bool, list[tuple[Path, str]]]:
    """The layout of ``src`` (see :func:`install_layout`) after checking every file: the catalogue's md5 (a
    URL model), the sha256 ``hf download`` recorded next to it, safetensors headers. ModelError if one fails."""
    rel, folder, files = install_layout(entry, src)
    for path, name in files:
        if not path.is_file():
            continue
        expected = RemoteFile(name, md5=entry.source.md5 if name == entry.files[0] and entry.source.md5 else None,
                              sha256=hub_etag(src, name) if src.is_dir() else None)
        problem = verify(path, expected)
        if problem is None and path.suffix == ".safetensors":
            problem = check_safetensors(path)
        if problem is not None:
            raise ModelError(f"{path} is not a good copy of {entry.name}'s {name}: {problem}; nothing was installed",
                             fix=f"copy it again from its source, or run `orbitmesh models download {entry.name}`")
    return rel, folder, files
