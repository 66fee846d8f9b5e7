"""The add-on's own manifest: the one place its version is written (``blender_manifest.toml``)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

MANIFEST_PATH = Path(__file__).resolve().parents[1] / "blender_manifest.toml"


def read_manifest(path: Path = MANIFEST_PATH) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


ADDON_VERSION: str = str(read_manifest()["version"])
