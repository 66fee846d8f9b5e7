#!/usr/bin/env python3
"""Build the OrbitMesh Blender extension packages into ``dist/``.

    python build.py                         # client package: dist/orbitmesh-<version>-client.zip
    python build.py --full linux-x64        # full package:   dist/orbitmesh-<version>-linux-x64.zip
    python build.py --full windows-x64 --full linux-x64 --torch-index-url https://download.pytorch.org/whl/cu124
    python build.py --write-contract        # regenerate blender_addon/contract.py from GenerateRequest
    python build.py --check                 # validate the manifest; fail when contract.py is stale

* "client": the add-on only (any platform); it talks to ``orbitmesh serve``.
* "full": the add-on plus, in ``wheels/``, the ``orbitmesh`` wheel built from ``backend/`` and its
  dependency wheels for one platform (``pip download --only-binary=:all: --python-version 3.11
  --platform <tag>``), listed in the package's manifest so Blender installs them; the
  "In Blender" backend then runs jobs with Blender's own Python.

Every package's manifest is validated (the rules of Blender's extension manifest) before
it is zipped; zips are written atomically; a table of sizes is printed at the end.
Only the standard library is used (and pip, for wheels).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "blender_addon"
MANIFEST = "blender_manifest.toml"
CONTRACT = ADDON_DIR / "contract.py"
WHEELS_DIR = ROOT / "wheels"
BUILD_DIR = ROOT / "build"
PYTHON_VERSION = "3.11"  # Blender 4.2 - 5.0 embed CPython 3.11

# Blender platform -> pip platform tags (pip expands older manylinux/macOS versions itself).
PLATFORM_TAGS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"],
    "linux-arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
    "windows-x64": ["win_amd64"],
    "windows-arm64": ["win_arm64"],
    "macos-arm64": ["macosx_11_0_arm64"],
    "macos-x64": ["macosx_10_15_x86_64"],
}
# Packages Blender already ships (shadowing them would break Blender or other add-ons).
BLENDER_BUNDLED = ("numpy", "requests", "certifi", "charset-normalizer", "idna", "urllib3", "zstandard", "cython")
# Kept in the resolution so wheels built against Blender's numpy are chosen.
BLENDER_CONSTRAINTS = ("numpy<2",)

REQUIRED = ("schema_version", "id", "name", "tagline", "version", "type", "maintainer", "license",
            "blender_version_min")
PERMISSIONS = ("files", "network", "clipboard", "camera", "microphone")
ADDON_TAGS = {"3D View", "Add Curve", "Add Mesh", "Animation", "Bake", "Camera", "Compositing", "Development",
              "Game Engine", "Geometry Nodes", "Grease Pencil", "Import-Export", "Lighting", "Material", "Mesh",
              "Modeling", "Node", "Object", "Paint", "Physics", "Pipeline", "Render", "Rigging", "Scene",
              "Sculpt", "Sequencer", "System", "Text Editor", "Tracking", "User Interface", "UV"}
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EXCLUDE_PARTS = {"__pycache__", ".git", ".pytest_cache"}
EXCLUDE_SUFFIXES = (".pyc", ".pyo", ".blend1")


def host_platform() -> str:
    """This machine as a Blender platform name (linux-x64, macos-arm64, windows-x64, ...)."""
    import platform

    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform.rstrip("0123456789"))
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower())
    return f"{system}-{machine}"


class BuildError(Exception):
    """A problem the person running the build can fix (message says how)."""


# ----- the add-on's generated contract ------------------------------------------------------


def render_contract() -> str:
    """The source of ``blender_addon/contract.py``: the generate settings of ``GenerateRequest`` as plain data.

    The add-on cannot import the backend (it may talk to a server on another machine), so it gets a
    generated copy; ``--check`` (and every build) fails when the copy is stale.
    """
    import pprint

    backend = str(ROOT / "backend")
    added = backend not in sys.path
    if added:
        sys.path.insert(0, backend)
    try:
        from orbitmesh.pipeline.request import addon_contract
    finally:
        if added:
            sys.path.remove(backend)
    data = addon_contract()
    body = "\n".join(f"{key.upper()} = {pprint.pformat(value, width=110, sort_dicts=False)}"
                     for key, value in data.items())
    return ('"""The generate settings contract, generated from orbitmesh.pipeline.request.GenerateRequest.\n\n'
            'Do not edit: run `python build.py --write-contract`. build.py --check and the tests fail when\n'
            'this file is stale.\n"""\n\n' + body + "\n")


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def contract_is_current() -> bool:
    return CONTRACT.is_file() and CONTRACT.read_text(encoding="utf-8") == render_contract()


def write_contract() -> bool:
    """Write contract.py when it differs (atomically); True when it changed."""
    text = render_contract()
    if CONTRACT.is_file() and CONTRACT.read_text(encoding="utf-8") == text:
        return False
    tmp = CONTRACT.with_suffix(".py.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, CONTRACT)
    return True


def check_contract() -> None:
    if not contract_is_current():
        raise BuildError(f"{_shown(CONTRACT)} is stale (GenerateRequest changed): "
                         "run `python build.py --write-contract` and commit it")


# ----- version and manifest ------------------------------------------------------------------


def package_version() -> str:
    """orbitmesh.__version__, read from the source (importing would need the package installed)."""
    text = (ROOT / "backend" / "orbitmesh" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if not match:
        raise BuildError("no __version__ in backend/orbitmesh/__init__.py")
    return match.group(1)


def load_manifest(path: Path | None = None) -> dict:
    path = path or ADDON_DIR / MANIFEST
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"{path} is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{path} is not valid TOML: {exc}") from None


def _terse(value) -> str | None:
    """Blender's rule for taglines and permission reasons."""
    if not isinstance(value, str) or not value.strip():
        return "must be non-empty text"
    if value != value.strip() or CONTROL.search(value):
        return "must have no surrounding spaces or control characters"
    if len(value) > 64:
        return f"must be at most 64 characters, has {len(value)}"
    if not (value[-1].isalnum() or value[-1] in ")]}"):
        return "must not end with punctuation"
    return None


def validate_manifest(data: dict, *, package_dir: Path | None = None, version: str | None = None) -> list[str]:
    """Every problem in ``data`` (empty when valid), following Blender's strict manifest rules."""
    errors = [f"missing \"{key}\"" for key in REQUIRED if key not in data]
    str_keys = ("schema_version", "id", "name", "tagline", "version", "type", "maintainer", "blender_version_min",
                "blender_version_max", "website")
    for key in str_keys:
        if key in data and not isinstance(data[key], str):
            errors.append(f"\"{key}\" must be a string")
    if errors:
        return errors
    pid = data["id"]
    if not pid.isidentifier() or "__" in pid or pid.startswith("_") or pid.endswith("_"):
        errors.append(f"\"id\" {pid!r} must be a Python identifier without leading/trailing/double underscores")
    for key in ("schema_version", "version"):
        if not SEMVER.match(data[key]):
            errors.append(f"\"{key}\" {data[key]!r} must be a semantic version like 1.0.0")
    if version is not None and data["version"] != version:
        errors.append(f"\"version\" {data['version']!r} differs from orbitmesh.__version__ {version!r}")
    if data["type"] not in ("add-on", "theme"):
        errors.append(f"\"type\" must be \"add-on\" or \"theme\", not {data['type']!r}")
    if (err := _terse(data["tagline"])) is not None:
        errors.append(f"\"tagline\" {err}")
    for key in ("name", "maintainer"):
        if not data[key].strip() or data[key] != data[key].strip() or CONTROL.search(data[key]):
            errors.append(f"\"{key}\" must be non-empty text without surrounding spaces")
    lic = data["license"]
    if not (isinstance(lic, list) and lic and all(isinstance(x, str) and x.startswith("SPDX:") for x in lic)):
        errors.append("\"license\" must be a non-empty list like [\"SPDX:GPL-3.0-or-later\"]")
    for key in ("blender_version_min", "blender_version_max"):
        if key in data and not re.fullmatch(r"\d+\.\d+\.\d+", data[key]):
            errors.append(f"\"{key}\" must be X.Y.Z, not {data[key]!r}")
    if re.fullmatch(r"\d+\.\d+\.\d+", data["blender_version_min"]) and \
            tuple(map(int, data["blender_version_min"].split("."))) < (4, 2, 0):
        errors.append("\"blender_version_min\" must be 4.2.0 or newer (extensions need Blender 4.2)")
    perms = data.get("permissions", {})
    if not isinstance(perms, dict):
        errors.append("\"permissions\" must be a table of reasons, e.g. network = \"Talks to ...\"")
    else:
        for key, reason in perms.items():
            if key not in PERMISSIONS:
                errors.append(f"permission {key!r} is not one of {', '.join(PERMISSIONS)}")
            elif (err := _terse(reason)) is not None:
                errors.append(f"permission \"{key}\" reason {err}")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or any(t not in ADDON_TAGS for t in tags):
        errors.append(f"\"tags\" must be a list of Blender's add-on tags, got {tags!r}")
    platforms = data.get("platforms")
    if platforms is not None:
        if not isinstance(platforms, list) or not platforms or any(p not in PLATFORM_TAGS for p in platforms):
            errors.append(f"\"platforms\" must be a non-empty list from {sorted(PLATFORM_TAGS)}, got {platforms!r}")
    wheels = data.get("wheels")
    if wheels is not None:
        if not isinstance(wheels, list) or not all(isinstance(w, str) and w for w in wheels):
            errors.append("\"wheels\" must be a list of paths")
        else:
            for wheel in wheels:
                name = wheel.rsplit("/", 1)[-1]
                if "\\" in wheel or '"' in wheel or not wheel.startswith("./wheels/") or not name.endswith(".whl"):
                    errors.append(f"wheel path {wheel!r} must look like ./wheels/NAME.whl")
                elif not 5 <= len(name.split("-")) <= 6:
                    errors.append(f"wheel file name {name!r} does not follow NAME-VERSION-PY-ABI-PLATFORM.whl")
                elif package_dir is not None and not (package_dir / wheel[2:]).is_file():
                    errors.append(f"wheel {wheel!r} is listed but not in the package")
        if not platforms:
            errors.append("a package with wheels must list its \"platforms\"")
    return errors


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON strings are valid TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise BuildError(f"cannot write {value!r} to TOML")


def dump_manifest(data: dict) -> str:
    """TOML text of a manifest (top-level keys, then one level of tables); round-trips through tomllib."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"]
            for k, v in table.items():
                if isinstance(v, dict):
                    raise BuildError(f"nested table {key}.{k} is not supported")
                lines.append(f"{k} = {_toml_value(v)}")
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != data:
        raise BuildError("internal error: the generated manifest does not round-trip")
    return text


# ----- wheels --------------------------------------------------------------------------------


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BuildError(f"{cmd[2] if len(cmd) > 2 else cmd[0]} failed (exit {proc.returncode}):\n{tail}")


# The orbitmesh[train] tools (training, procedural data, benchmarks): the runtime never imports them
# (orbitmesh.cli.optional.TOOL_PACKAGES, checked by tests/addon/test_build.py), so the add-on's wheel leaves them out.
TOOL_PACKAGES = ("training", "data", "bench")


def _ignore_tools(directory: str, names: list[str]) -> set[str]:
    """copytree ignore: the tool packages directly under backend/orbitmesh (not other folders named so)."""
    if Path(directory) == ROOT / "backend" / "orbitmesh":
        return {n for n in names if n in TOOL_PACKAGES}
    return set()


def build_orbitmesh_wheel(out_dir: Path = WHEELS_DIR) -> Path:
    """``pip wheel --no-deps`` of this repository: the orbitmesh runtime, without the training/bench tools."""
    out_dir.mkdir(parents=True, exist_ok=True)
    version = package_version()
    for old in out_dir.glob("orbitmesh-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="orbitmesh-wheel-") as tmp:
        # Build from a clean copy: an in-tree build/ directory could leak stale modules into the wheel.
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
            if (ROOT / name).is_file():
                shutil.copy2(ROOT / name, src / name)
        patterns = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(ROOT / "backend", src / "backend",
                        ignore=lambda d, names: patterns(d, names) | _ignore_tools(d, names))
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp, str(src)])
        built = sorted(Path(tmp).glob(f"orbitmesh-{version}-*.whl"))
        if not built:
            raise BuildError(f"pip wheel produced no orbitmesh-{version} wheel")
        target = out_dir / built[0].name
        shutil.move(str(built[0]), target)
    return target


def _dist_name(wheel: str) -> str:
    return re.sub(r"[-_.]+", "-", wheel.split("-", 1)[0]).lower()


def download_dependencies(orbitmesh_wheel: Path, platform: str, out_dir: Path, *, pip_args: list[str]) -> list[Path]:
    """Dependency wheels of ``orbitmesh_wheel`` for ``platform`` and CPython 3.11 (minus Blender's own)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a fresh resolution each build; pip's own cache avoids re-downloads
    out_dir.mkdir(parents=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(BLENDER_CONSTRAINTS) + "\n")
        constraints = fh.name
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
               "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""), "-d", str(out_dir),
               "-c", constraints, "-q"]
        for tag in PLATFORM_TAGS[platform]:
            cmd += ["--platform", tag]
        _run(cmd + pip_args + [str(orbitmesh_wheel)])
    finally:
        os.unlink(constraints)
    wheels = []
    for wheel in sorted(out_dir.glob("*.whl")):
        name = _dist_name(wheel.name)
        if name == "orbitmesh" or name in BLENDER_BUNDLED:
            continue
        wheels.append(wheel)
    return wheels


# ----- packages ------------------------------------------------------------------------------


@dataclass
class Package:
    path: Path
    kind: str
    files: int
    wheels: int
    size: int


def addon_files() -> list[Path]:
    out = []
    for path in sorted(ADDON_DIR.rglob("*")):
        rel = path.relative_to(ADDON_DIR)
        if path.is_dir() or set(rel.parts) & EXCLUDE_PARTS or path.name.endswith(EXCLUDE_SUFFIXES):
            continue
        if rel.as_posix() == MANIFEST or rel.parts[0] == "wheels":
            continue
        out.append(path)
    if not (ADDON_DIR / "__init__.py").is_file():
        raise BuildError(f"{ADDON_DIR}/__init__.py is missing")
    return out


def write_package(target: Path, manifest: dict, wheels: list[Path], *, kind: str) -> Package:
    """Validate ``manifest`` against the staged files and write the zip atomically."""
    with tempfile.TemporaryDirectory(prefix="orbitmesh-pkg-") as tmp:
        stage = Path(tmp)
        for src in addon_files():
            dst = stage / src.relative_to(ADDON_DIR)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        if wheels:
            (stage / "wheels").mkdir()
            for wheel in wheels:
                shutil.copy2(wheel, stage / "wheels" / wheel.name)
            manifest = {**manifest, "wheels": [f"./wheels/{w.name}" for w in wheels]}
        manifest = {k: v for k, v in manifest.items() if k != "build"}  # [build] is for Blender's own builder
        errors = validate_manifest(manifest, package_dir=stage, version=package_version())
        if errors:
            raise BuildError(f"{target.name}: invalid manifest:\n  " + "\n  ".join(errors))
        (stage / MANIFEST).write_text(dump_manifest(manifest), encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_zip = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".zip.tmp", dir=target.parent)
        os.close(fd)
        try:
            count = 0
            with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(stage.rglob("*")):
                    if path.is_file():
                        rel = path.relative_to(stage).as_posix()
                        # wheels are already compressed: store them
                        zf.write(path, rel, compress_type=zipfile.ZIP_STORED if rel.endswith(".whl") else None)
                        count += 1
            os.replace(tmp_zip, target)
        finally:
            if os.path.exists(tmp_zip):
                os.unlink(tmp_zip)
    return Package(target, kind, count, len(wheels), target.stat().st_size)


def build_client(dist: Path) -> Package:
    manifest = load_manifest()
    manifest.pop("platforms", None)
    manifest.pop("wheels", None)
    return write_package(dist / f"orbitmesh-{package_version()}-client.zip", manifest, [], kind="client")


def build_full(dist: Path, platform: str, *, skip_deps: bool = False, pip_args: list[str] | None = None,
               orbitmesh_wheel: Path | None = None) -> Package:
    if platform not in PLATFORM_TAGS:
        raise BuildError(f"unknown platform {platform!r}; use one of {', '.join(PLATFORM_TAGS)}")
    wheel = orbitmesh_wheel or build_orbitmesh_wheel()
    deps = [] if skip_deps else download_dependencies(wheel, platform, BUILD_DIR / f"wheels-{platform}",
                                                       pip_args=pip_args or [])
    manifest = load_manifest()
    manifest["platforms"] = [platform]
    return write_package(dist / f"orbitmesh-{package_version()}-{platform}.zip", manifest, [wheel, *deps],
                         kind="full" + (" (orbitmesh wheel only)" if skip_deps else ""))


def format_sizes(packages: list[Package]) -> str:
    rows = [("package", "kind", "files", "wheels", "size")]
    rows += [(p.path.name, p.kind, str(p.files), str(p.wheels), f"{p.size / 2**20:.2f} MiB") for p in packages]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="append", default=[], metavar="PLATFORM",
                        help=f"also build a full package for PLATFORM (repeatable): {', '.join(PLATFORM_TAGS)}")
    parser.add_argument("--no-client", action="store_true", help="skip the client package")
    parser.add_argument("--skip-deps", action="store_true",
                        help="full packages bundle only the orbitmesh wheel (no dependency download; for testing)")
    parser.add_argument("--torch-index-url", help="extra index for torch, e.g. https://download.pytorch.org/whl/cu124")
    parser.add_argument("--pip-arg", action="append", default=[], help="extra argument for pip download (repeatable)")
    parser.add_argument("--dist", default=str(ROOT / "dist"), help="output folder (default dist/)")
    parser.add_argument("--check", action="store_true",
                        help="only validate the source manifest and that contract.py is current")
    parser.add_argument("--write-contract", action="store_true",
                        help="regenerate blender_addon/contract.py from GenerateRequest and stop")
    args = parser.parse_args(argv)
    try:
        if args.write_contract:
            changed = write_contract()
            print(f"{_shown(CONTRACT)}: {'written' if changed else 'already current'}")
            return 0
        check_contract()
        version = package_version()
        manifest = load_manifest()
        errors = validate_manifest(manifest, version=version)
        if errors:
            raise BuildError(f"{ADDON_DIR / MANIFEST} is invalid:\n  " + "\n  ".join(errors))
        if args.check:
            print(f"{MANIFEST}: valid (orbitmesh {version})")
            return 0
        dist = Path(args.dist)
        pip_args = list(args.pip_arg)
        if args.torch_index_url:
            pip_args += ["--extra-index-url", args.torch_index_url]
        packages = [] if args.no_client else [build_client(dist)]
        wheel = build_orbitmesh_wheel() if args.full else None
        for platform in args.full:
            packages.append(build_full(dist, platform, skip_deps=args.skip_deps, pip_args=pip_args,
                                       orbitmesh_wheel=wheel))
        if not packages:
            raise BuildError("nothing to build: drop --no-client or add --full PLATFORM")
        print(format_sizes(packages))
        return 0
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
