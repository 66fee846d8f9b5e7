"""Which models a client may name: catalogue names, and models already inside the server's model folder.

A client of a shared server must not choose server paths (``"/etc/passwd"``, ``"~"``: the loader's different
errors made a file-existence oracle) nor start downloads of arbitrary hub repositories. The operator can allow
paths and hub ids with ``serve --allow-model-paths``. Checked on the raw settings, before anything is resolved.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orbitmesh.server.api_errors import bad_request

# Settings that name a model, and the catalogue kind each names.
MODEL_SETTINGS = {"model": "lrm", "text_to_image_model": "text_to_image"}
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def check_client_models(values: dict[str, Any], model_dir: Path, *, allow_paths: bool = False) -> None:
    """400 ``model_unavailable`` when a model setting in ``values`` is neither a catalogue model of its kind nor
    a model already in ``model_dir`` (a folder name for a reconstruction model, a hub id whose files are there
    for a text-to-image model). Non-strings are left to the settings' own type check."""
    if allow_paths:
        return
    from orbitmesh.models import catalogue

    for key, kind in MODEL_SETTINGS.items():
        name = values.get(key)
        if not isinstance(name, str) or not name:
            continue
        names = [entry.name for entry in catalogue.models(kind)]
        if name in names or _in_model_folder(name, kind, model_dir):
            continue
        if any(c in name for c in "/\\~"):  # not echoed: API errors never carry server paths
            message = f"{key} names a path or a hub id; a client may only name models"
        else:
            message = f"{key} {name!r} is neither a catalogue model nor a model in this server's model folder"
        raise bad_request(message,
                          fix=f"use one of {', '.join(names)} (GET /health lists what is installed), or a "
                              "folder name inside the server's model folder; paths and other hub ids need the "
                              "operator's serve --allow-model-paths", code="model_unavailable")


def _in_model_folder(name: str, kind: str, model_dir: Path) -> bool:
    """Whether ``name`` is a model already inside ``model_dir`` (never a path, never a download)."""
    if ".." in name:
        return False
    if kind == "lrm":
        return bool(FOLDER_NAME.match(name)) and (model_dir / name).is_dir()
    if not HUB_ID.match(name):
        return False
    from orbitmesh.models.text_to_image import find_local_model

    return find_local_model(name, model_dir) is not None
