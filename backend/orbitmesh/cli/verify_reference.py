"""``orbitmesh verify-reference FIXTURE.safetensors``: reproduce a reference-parity fixture.

Builds our model from the config in the fixture's metadata, loads its ``model.*`` weights by
their reference names, runs it on the ``in.*`` inputs and prints the max abs error per
``out.*`` tensor. Exit 0 only if every error is <= 1e-4.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orbitmesh.errors import InputError, ModelError

TOLERANCE = 1e-4


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("verify-reference", help="check our models against a reference-parity fixture")
    parser.add_argument("fixture", help="fixture .safetensors (LRM, TripoSR or SV3D)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def fixture_kind(path: str | Path) -> str:
    """'sv3d' if the metadata has unet_config, 'lrm' if it has generator_config, 'triposr' if its config is
    a TripoSR config (released config.yaml layout)."""
    from orbitmesh.models.lrm.parity import fixture_metadata
    from orbitmesh.models.triposr.parity import is_fixture as is_triposr_fixture

    path = Path(path)
    meta = fixture_metadata(path)
    if "unet_config" in meta:
        return "sv3d"
    if "generator_config" in meta:
        return "lrm"
    if is_triposr_fixture(meta):
        return "triposr"
    raise InputError(f"{path.name} has no generator_config (LRM), TripoSR config or unet_config (SV3D) in its "
                     "metadata", fix="pass a reference-parity fixture")


def run_parity(path: str | Path) -> dict[str, float]:
    """Dispatch on the fixture kind to the model's ``run_fixture(path) -> {out.name: max abs error}``."""
    kind = fixture_kind(path)
    if kind == "lrm":
        from orbitmesh.models.lrm.parity import run_fixture
    elif kind == "triposr":
        from orbitmesh.models.triposr.parity import run_fixture
    else:
        try:
            from orbitmesh.models.video.parity import run_fixture
        except ImportError as exc:
            raise ModelError(f"SV3D parity is not available in this build ({exc})",
                             fix="update OrbitMesh to a version with the SV3D video model") from exc
    return run_fixture(str(path))


def run(args: argparse.Namespace) -> int:
    errors = run_parity(args.fixture)
    ok = bool(errors) and all(err <= TOLERANCE for err in errors.values())
    if args.json:
        print(json.dumps({"fixture": str(args.fixture), "tolerance": TOLERANCE, "ok": ok, "max_abs_error": errors}))
    else:
        width = max((len(k) for k in errors), default=10)
        print(f"{'output':<{width}}  max abs error  (tolerance {TOLERANCE:g})")
        for name, err in errors.items():
            print(f"{name:<{width}}  {err:.3e}  {'ok' if err <= TOLERANCE else 'FAIL'}")
        print("PASS" if ok else "FAIL")
    return 0 if ok else 1
