"""Helpers shared by the model tests: files laid out as the huggingface_hub cache keeps them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def _hub_snapshot(cache: Path, hub_id: str, revision: str = "0123abcd") -> Path:
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture(scope="session")
def hub_snapshot() -> Callable[..., Path]:
    """hub_snapshot(cache, hub_id, revision="0123abcd") -> the (created) snapshot folder of ``hub_id`` in a
    huggingface_hub cache: cache/models--org--name/snapshots/<revision>/, with refs/main naming that revision."""
    return _hub_snapshot


@pytest.fixture(scope="session")
def fake_hub_file() -> Callable[..., Path]:
    """fake_hub_file(cache, hub_id, filename, revision="0123abcd") -> the path of a small stand-in file
    (b"weights") cached for ``hub_id`` as huggingface_hub keeps it."""

    def make(cache: Path, hub_id: str, filename: str, revision: str = "0123abcd") -> Path:
        path = _hub_snapshot(cache, hub_id, revision) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        return path

    return make
