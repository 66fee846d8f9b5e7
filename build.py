#!/usr/bin/env python3
"""Build the OrbitMesh Blender extension packages into ``dist/``.

    python build.py                         # client package: dist/orbitmesh-<version>-client.zip
    python build.py --full linux-x64        # full package:   dist/orbitmesh-<version>-linux-x64.zip
    python build.py --full windows-x64 --full linux-x64 --torch-index-url https://download.pytorch.org/whl/cu124
    python build.py --resolve windows-x64 macos-arm64  # what those full packages would bundle (nothing kept)
    python build.py --write-contract        # regenerate blender_addon/contract.py from GenerateRequest
    python build.py --check                 # validate the manifest and the licences of wheels already built;
                                            # fail when contract.py is stale (offline, fast: CI runs it)

* "client": the add-on only (any platform); it talks to ``orbitmesh serve``.
* "full": the add-on plus, in ``wheels/``, the ``orbitmesh`` wheel built from ``backend/`` and its
  dependency wheels for Blender's CPython 3.11 on one platform, listed in the package's manifest so Blender
  installs them; the "In Blender" backend then runs jobs with Blender's own Python. Every wheel is resolved
  for Blender's floor there (glibc 2.28, macOS 11; ``pip install --dry-run --report`` with the target's
  platform tags and requirement markers), except the LATE_PACKAGES (pymeshlab): the runtime imports them
  lazily and does without them, so each gets its own newest tag (pymeshlab's Linux wheel needs glibc 2.35).
  The resolved ``name==version`` wheels are then downloaded. torch: a torch wheel in pip's find-links for
  the platform (a local CPU build, say) is pinned unless ``--torch-index-url``/``--torch`` say otherwise.
  A generated THIRD_PARTY_NOTICES.txt lists every bundled wheel with its licence; a wheel whose licence
  cannot be read fails the build.

Every package's manifest is validated (the rules of Blender's extension manifest) before
it is zipped; zips are written atomically; a table of sizes is printed at the end.
Only the standard library is used (and pip, for wheels).
"""

from __future__ import annotations

import argparse
import email.message
import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "blender_addon"
MANIFEST = "blender_manifest.toml"
NOTICES = "THIRD_PARTY_NOTICES.txt"  # generated into every full package
CONTRACT = ADDON_DIR / "contract.py"
WHEELS_DIR = ROOT / "wheels"
BUILD_DIR = ROOT / "build"
PYTHON_VERSION = "3.11"  # Blender 4.2 - 5.0 embed CPython 3.11


@dataclass(frozen=True)
class Target:
    """A Blender platform as wheel tags: ``floor`` is the oldest system Blender itself runs on there (glibc for
    Linux, macOS for macOS; Blender 4.2 - 5.0 need glibc 2.28 and macOS 11.2), ``ceiling`` the newest system a
    LATE_PACKAGES wheel may ask for."""

    os: str  # linux, windows, macos
    arch: str  # as in wheel platform tags
    floor: tuple[int, int] | None = None
    ceiling: tuple[int, int] | None = None


TARGETS = {
    "linux-x64": Target("linux", "x86_64", (2, 28), (2, 39)),
    "linux-arm64": Target("linux", "aarch64", (2, 28), (2, 39)),
    "windows-x64": Target("windows", "amd64"),
    "windows-arm64": Target("windows", "arm64"),
    "macos-arm64": Target("macos", "arm64", (11, 0), (15, 0)),
    "macos-x64": Target("macos", "x86_64", (11, 0), (15, 0)),
}
# The legacy manylinux names and the glibc each stands for (PEP 599/571/513).
LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}


def platform_tags(platform: str, up_to: tuple[int, int] | None = None) -> list[str]:
    """pip ``--platform`` tags for wheels that run on ``platform`` at ``up_to`` (default: Blender's floor).

    pip expands an old macOS version itself, but not ``manylinux_2_X`` (pip 23), so every glibc minor down to
    2.5 and the legacy names are listed."""
    t = TARGETS[platform]
    top = up_to or t.floor
    if t.os == "windows":
        return [f"win_{t.arch}"]
    if t.os == "macos":
        return [f"macosx_{top[0]}_{top[1]}_{t.arch}"]
    tags = [f"manylinux_{top[0]}_{minor}_{t.arch}" for minor in range(top[1], 4, -1)]
    for name, (_, minor) in LEGACY_MANYLINUX.items():
        if minor <= top[1] and (name == "manylinux2014" or t.arch in ("x86_64", "i686")):
            tags.append(f"{name}_{t.arch}")
    return tags


# Blender platform -> pip platform tags: every wheel but the LATE_PACKAGES must run on Blender's floor.
PLATFORM_TAGS = {p: platform_tags(p) for p in TARGETS}
# Core dependencies the runtime imports lazily and does without (with a note): each is resolved at its own newest
# tag up to the platform's ceiling, so a system older than that wheel still runs OrbitMesh. Name -> what is lost.
LATE_PACKAGES = {"pymeshlab": "the pymeshlab decimation fallback (fast-simplification still decimates)"}
LATE_TAGS = {p: platform_tags(p, TARGETS[p].ceiling) for p in TARGETS}
# pip evaluates environment markers (``nvidia-nccl; platform_system == "Linux"``) for the machine it runs on, even
# with --platform: every pip run here evaluates them for the target platform instead (see _pip).
MARKERS = {
    "linux": {"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux"},
    "windows": {"os_name": "nt", "sys_platform": "win32", "platform_system": "Windows"},
    "macos": {"os_name": "posix", "sys_platform": "darwin", "platform_system": "Darwin"},
}
MARKER_MACHINE = {"linux-x64": "x86_64", "linux-arm64": "aarch64", "windows-x64": "AMD64", "windows-arm64": "ARM64",
                  "macos-arm64": "arm64", "macos-x64": "x86_64"}


def marker_environment(platform: str) -> dict[str, str]:
    """The PEP 508 marker values of Blender's Python on ``platform`` (those a requirement can tell apart)."""
    return {**MARKERS[TARGETS[platform].os], "platform_machine": MARKER_MACHINE[platform],
            "python_version": PYTHON_VERSION, "python_full_version": PYTHON_VERSION + ".0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}
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
    holders = data.get("copyright")
    if holders is not None and not (isinstance(holders, list) and all(
            isinstance(c, str) and re.fullmatch(r"\d+(-\d+)? +\S.*", c) for c in holders)):
        errors.append("\"copyright\" must be a list like [\"2026 Name\"] or [\"2024-2026 Name\"]")
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


# Runs pip with the target platform's marker environment (a JSON object, the first argument).
_PIP_FOR_TARGET = """import json, sys
target = json.loads(sys.argv.pop(1))
try:
    from pip._vendor.packaging import markers
    host = markers.default_environment()
    markers.default_environment = lambda: {**host, **target}
except (ImportError, AttributeError) as exc:
    print(f"build.py: cannot set pip's marker environment ({exc}); markers are evaluated for this machine",
          file=sys.stderr)
from pip._internal.cli.main import main
sys.exit(main())
"""


def _pip(platform: str | None, *args: str) -> list[str]:
    """A pip command line; with ``platform``, requirement markers are evaluated for that platform."""
    if platform is None:
        return [sys.executable, "-m", "pip", *args]
    return [sys.executable, "-c", _PIP_FOR_TARGET, json.dumps(marker_environment(platform)), *args]


def _show(cmd: list[str]) -> str:
    """A pip command line for the log: ``pip (for PLATFORM markers) ARGS`` with only the first --platform tag."""
    if cmd[1:2] == ["-c"] and cmd[2] == _PIP_FOR_TARGET:
        env = json.loads(cmd[3])
        cmd = [f"pip (markers: {env['sys_platform']} {env['platform_machine']})", *cmd[4:]]
    elif cmd[1:3] == ["-m", "pip"]:
        cmd = ["pip", *cmd[3:]]
    out, skipped = [], 0
    for i, arg in enumerate(cmd):
        if arg == "--platform" and "--platform" in out:
            skipped += 1
            continue
        if i and cmd[i - 1] == "--platform" and out[-1] != "--platform":
            continue
        out.append(arg)
    return " ".join(out) + (f"  (+{skipped} older platform tags)" if skipped else "")


def _run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    print("+ " + _show(cmd), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if check and proc.returncode != 0:
        what = next((a for a in cmd if a in ("wheel", "download", "install")), cmd[0])
        raise BuildError(f"pip {what} failed (exit {proc.returncode}):\n" + _tail(proc.stdout + proc.stderr))
    return proc


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in text.strip().splitlines() if "is ignored: it is neither a file nor" not in line]
    return "\n".join(kept[-lines:])


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
        _run(_pip(None, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp, str(src)))
        built = sorted(Path(tmp).glob(f"orbitmesh-{version}-*.whl"))
        if not built:
            raise BuildError(f"pip wheel produced no orbitmesh-{version} wheel")
        target = out_dir / built[0].name
        shutil.move(str(built[0]), target)
    return target


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(wheel: str) -> str:
    return _normal(wheel.split("-", 1)[0])


def _req_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise BuildError(f"cannot read the package name of the requirement {requirement!r}")
    return _normal(match.group(1))


def wheel_metadata(path: Path) -> email.message.Message:
    """The ``*.dist-info/METADATA`` of a wheel, parsed (headers; the body is the long description)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not names:
                raise BuildError(f"{path.name} has no .dist-info/METADATA: not a wheel")
            return email.parser.BytesParser().parsebytes(zf.read(names[0]))
    except zipfile.BadZipFile:
        raise BuildError(f"{path} is not a zip file (a broken download?): delete it and build again") from None


def core_requirements(wheel: Path | None = None) -> list[str]:
    """orbitmesh's core requirements (no extras): from the built wheel's metadata, else from pyproject.toml."""
    if wheel is not None:
        reqs = wheel_metadata(wheel).get_all("Requires-Dist") or []
        return [r.strip() for r in reqs if "extra" not in r.partition(";")[2]]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return list(project["dependencies"])


# ----- platforms: Blender's floor, and each wheel's real tags ----------------------------------


def wheel_floor(filename: str) -> tuple[int, int] | None:
    """The oldest system a wheel file runs on, from its platform tags: (2, 28) for glibc 2.28 (manylinux),
    (11, 0) for macOS 11; None for a wheel without such a bound (pure Python, Windows).

    A compressed tag set (``manylinux_2_17_x86_64.manylinux2014_x86_64``) runs where any of its tags does.
    """
    stem = filename[:-4] if filename.endswith(".whl") else filename
    found = []
    for tag in stem.split("-")[-1].split("."):
        if m := re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", tag):
            found.append((int(m.group(1)), int(m.group(2))))
        elif m := re.fullmatch(r"(manylinux2014|manylinux2010|manylinux1)_\w+", tag):
            found.append(LEGACY_MANYLINUX[m.group(1)])
        elif m := re.fullmatch(r"macosx_(\d+)_(\d+)_\w+", tag):
            found.append((int(m.group(1)), int(m.group(2))))
    return min(found) if found else None


def system_name(platform: str, floor: tuple[int, int] | None) -> str:
    """``glibc 2.28`` / ``macOS 11.0`` / ``any Windows``: what a floor means on ``platform``."""
    if floor is None:
        return "any " + {"linux": "Linux", "macos": "macOS", "windows": "Windows"}[TARGETS[platform].os]
    return f"{'glibc' if TARGETS[platform].os == 'linux' else 'macOS'} {floor[0]}.{floor[1]}"


# ----- resolving with pip ------------------------------------------------------------------------


@dataclass
class Resolved:
    """One distribution pip chose (``pip install --dry-run --report``), not downloaded."""

    name: str  # normalised distribution name
    version: str
    filename: str  # the wheel pip would install
    url: str
    metadata: dict = field(default_factory=dict)  # pip's report of its METADATA (JSON form)


class ResolveError(BuildError):
    """pip found no wheel for ``missing`` (distribution names; empty when pip failed otherwise)."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


def _target_args(tags: list[str]) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
            "--abi", "cp" + PYTHON_VERSION.replace(".", "")]
    for tag in tags:
        args += ["--platform", tag]
    return args


def pip_resolve(requirements: list[str], platform: str, *, up_to: tuple[int, int] | None = None,
                constraints: list[str] = (), pip_args: list[str] = (), no_deps: bool = False,
                no_index: bool = False) -> list[Resolved]:
    """What pip would install for ``requirements`` into Blender's Python on ``platform``: wheels for its floor
    (PLATFORM_TAGS) or for systems up to ``up_to``, markers for that platform. Nothing is kept: pip reads the
    metadata from the index, or from a wheel it fetches into a temporary folder. Raises ResolveError naming
    what has no wheel."""
    tags = platform_tags(platform, up_to) if up_to else PLATFORM_TAGS[platform]
    with tempfile.TemporaryDirectory(prefix="orbitmesh-resolve-") as tmp:
        cfile, report = Path(tmp) / "constraints.txt", Path(tmp) / "report.json"
        cfile.write_text("\n".join(constraints) + "\n", encoding="utf-8")
        args = ["install", "--dry-run", "--ignore-installed", "-q", "--report", str(report), "--target",
                str(Path(tmp) / "target"), *_target_args(tags), "-c", str(cfile)]
        args += (["--no-deps"] if no_deps else []) + (["--no-index"] if no_index else []) + list(pip_args)
        proc = _run(_pip(platform, *args, *requirements), check=False)
        if proc.returncode != 0:
            out = proc.stdout + proc.stderr
            missing = sorted({_req_name(m) for m in re.findall(r"No matching distribution found for (\S+)", out)})
            raise ResolveError(f"pip found no wheels for {', '.join(missing) or 'the requirements'}:\n{_tail(out)}",
                               missing)
        data = json.loads(report.read_text(encoding="utf-8"))
    out = []
    for item in data.get("install", []):
        url, meta = item["download_info"]["url"], item["metadata"]
        out.append(Resolved(_normal(meta["name"]), meta["version"], urllib.parse.unquote(url.rsplit("/", 1)[-1]),
                            url, meta))
    return out


def torch_constraint(platform: str, choice: str = "auto", *, pip_args: list[str] = ()) -> str | None:
    """The torch pin for a full package: ``choice`` "index" leaves torch to pip (PyPI's torch is the CUDA build
    on Linux and Windows); a version pins it; "auto" pins a torch wheel that pip finds in its find-links (a
    local wheel folder, such as a CPU build kept on disk) for ``platform``, else leaves it to pip."""
    if choice == "index":
        return None
    if choice != "auto":
        return choice if _req_name(choice) == "torch" else f"torch=={choice}"
    try:
        found = pip_resolve(["torch"], platform, pip_args=pip_args, no_deps=True, no_index=True)
    except ResolveError:
        return None
    return f"torch=={found[0].version}" if found else None


@dataclass
class Plan:
    """What a full package for ``platform`` bundles (resolved, not downloaded)."""

    platform: str
    core: list[Resolved]  # at Blender's floor (PLATFORM_TAGS)
    late: list[Resolved] = field(default_factory=list)  # LATE_PACKAGES and what only they need, at LATE_TAGS
    left_out: list[Resolved] = field(default_factory=list)  # Blender ships them
    missing: dict[str, list[str]] = field(default_factory=dict)  # distribution without a wheel -> requirements
    lowest: dict[str, tuple[str, tuple[int, int]] | None] = field(default_factory=dict)  # missing -> the
    # oldest system any of its wheels runs on, up to the ceiling (its version, that system); None: no wheel at all
    missing_late: dict[str, str] = field(default_factory=dict)  # late package -> why it is not bundled
    torch: str | None = None  # the torch constraint used

    @property
    def bundled(self) -> list[Resolved]:
        return self.core + self.late

    def missing_lines(self) -> list[str]:
        """One line per distribution without a wheel at Blender's floor, with the oldest system it has one for."""
        out = []
        for name, reqs in self.missing.items():
            line = f"{name} (needed by {', '.join(reqs)}) has no wheel for {self.platform} at Blender's floor, " \
                   f"{system_name(self.platform, TARGETS[self.platform].floor)}"
            if name in self.lowest:
                found = self.lowest[name]
                line += f"; {name} {found[0]} needs {system_name(self.platform, found[1])}" if found else \
                    f"; it has no wheel for {self.platform} up to " \
                    f"{system_name(self.platform, TARGETS[self.platform].ceiling)}"
            out.append(line)
        return out


def lowest_system(name: str, platform: str, *, pip_args: list[str] = ()) -> tuple[str, tuple[int, int]] | None:
    """(version, system) of the wheel of ``name`` that runs on the oldest system above Blender's floor, up to
    the ceiling (one pip run per system version); None when it has none."""
    t = TARGETS[platform]
    if t.floor is None:
        return None
    steps = [(t.floor[0], m) for m in range(t.floor[1] + 1, t.ceiling[1] + 1)] if t.os == "linux" else \
        [(v, 0) for v in range(t.floor[0] + 1, t.ceiling[0] + 1)]
    for up_to in steps:
        try:
            found = pip_resolve([name], platform, up_to=up_to, pip_args=pip_args, no_deps=True)
        except ResolveError:
            continue
        if found:
            return found[0].version, wheel_floor(found[0].filename) or up_to
    return None


def plan_dependencies(requirements: list[str], platform: str, *, pip_args: list[str] = (),
                      torch: str = "auto", diagnose: bool = False) -> Plan:
    """Resolve orbitmesh's ``requirements`` for ``platform``: every one but the LATE_PACKAGES at Blender's floor,
    then each late package at its own newest tag (up to the ceiling, LATE_TAGS) with the core versions pinned.

    A core requirement without a wheel raises ResolveError; with ``diagnose`` the requirements are resolved one
    by one instead and each distribution without a wheel is recorded in ``Plan.missing``, with the oldest system
    it has a wheel for in ``Plan.lowest``. A late package without a wheel is recorded in ``Plan.missing_late`` (the
    runtime does without it)."""
    if platform not in TARGETS:
        raise BuildError(f"unknown platform {platform!r}; use one of {', '.join(TARGETS)}")
    late_reqs = [r for r in requirements if _req_name(r) in LATE_PACKAGES]
    core_reqs = [r for r in requirements if _req_name(r) not in LATE_PACKAGES]
    constraints = list(BLENDER_CONSTRAINTS)
    pin = torch_constraint(platform, torch, pip_args=pip_args)
    if pin:
        constraints.append(pin)
    plan = Plan(platform, [], torch=pin)
    try:
        resolved = pip_resolve(core_reqs, platform, constraints=constraints, pip_args=pip_args)
    except ResolveError as exc:
        if not diagnose:
            raise ResolveError(f"{platform}: {exc}\nEvery dependency but {', '.join(LATE_PACKAGES)} needs a wheel "
                               f"for {system_name(platform, TARGETS[platform].floor)}, Blender's own floor; "
                               f"`python build.py --resolve {platform}` says which and what they need",
                               exc.missing) from None
        by_name: dict[str, Resolved] = {}
        for req in core_reqs:  # which requirement lacks what: one at a time
            try:
                for r in pip_resolve([req], platform, constraints=constraints, pip_args=pip_args):
                    by_name.setdefault(r.name, r)
            except ResolveError as one:
                for name in one.missing or [_req_name(req)]:
                    plan.missing.setdefault(name, []).append(req)
        for name in plan.missing:
            plan.lowest[name] = lowest_system(name, platform, pip_args=pip_args)
        resolved = list(by_name.values())
    for r in resolved:
        (plan.left_out if r.name in BLENDER_BUNDLED else plan.core).append(r)
    known = {r.name for r in resolved}
    pins = [f"{r.name}=={r.version}" for r in resolved]
    for req in late_reqs:
        try:
            got = pip_resolve([req], platform, up_to=TARGETS[platform].ceiling, constraints=constraints + pins,
                              pip_args=pip_args)
        except ResolveError as exc:
            plan.missing_late[_req_name(req)] = (f"no wheel for {platform} up to "
                                                 f"{system_name(platform, TARGETS[platform].ceiling)}"
                                                 if exc.missing else str(exc))
            continue
        for r in got:
            if r.name not in known and r.name not in BLENDER_BUNDLED:
                plan.late.append(r)
                known.add(r.name)
    return plan


def download_plan(plan: Plan, out_dir: Path, *, pip_args: list[str] = ()) -> list[Path]:
    """Download exactly the planned wheels (``pip download --no-deps`` of each ``name==version``, with the tags
    they were resolved for) into a fresh ``out_dir``; pip's own cache avoids re-downloads."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for group, tags in ((plan.core, PLATFORM_TAGS[plan.platform]), (plan.late, LATE_TAGS[plan.platform])):
        if group:
            _run(_pip(plan.platform, "download", "--no-deps", "-q", "-d", str(out_dir), *_target_args(tags),
                      *pip_args, *[f"{r.name}=={r.version}" for r in group]))
    got = {_dist_name(w.name): w for w in out_dir.glob("*.whl")}
    lost = [r.name for r in plan.bundled if r.name not in got]
    if lost:
        raise BuildError(f"pip download did not produce wheels for {', '.join(lost)}")
    return sorted((got[r.name] for r in plan.bundled), key=lambda p: p.name.lower())


def download_dependencies(orbitmesh_wheel: Path, platform: str, out_dir: Path, *, pip_args: list[str],
                          torch: str = "auto") -> tuple[list[Path], Plan]:
    """Dependency wheels of ``orbitmesh_wheel`` for ``platform`` and CPython 3.11 (minus Blender's own), and the
    plan they came from."""
    plan = plan_dependencies(core_requirements(orbitmesh_wheel), platform, pip_args=pip_args, torch=torch)
    return download_plan(plan, out_dir, pip_args=pip_args), plan


# ----- licences ------------------------------------------------------------------------------------

# Licence texts recognised in a wheel's licence files when its metadata declares none (first match wins).
LICENCE_TEXTS = (
    (r"GNU LESSER GENERAL PUBLIC LICENSE\s+Version 3", "LGPL-3.0"),
    (r"GNU LESSER GENERAL PUBLIC LICENSE\s+Version 2\.1", "LGPL-2.1"),
    (r"GNU GENERAL PUBLIC LICENSE\s+Version 3", "GPL-3.0"),
    (r"GNU GENERAL PUBLIC LICENSE\s+Version 2", "GPL-2.0"),
    (r"Apache License,?\s+Version 2\.0", "Apache-2.0"),
    (r"Mozilla Public License,?\s+[Vv]ersion 2\.0", "MPL-2.0"),
    (r"Permission is hereby granted, free of charge", "MIT"),
    (r"Redistribution and use in source and binary forms[\s\S]*Neither the name", "BSD-3-Clause"),
    (r"Redistribution and use in source and binary forms", "BSD-2-Clause"),
    (r"Permission to use, copy, modify, and(/or)? distribute this software for any", "ISC"),
    (r"PYTHON SOFTWARE FOUNDATION LICENSE", "PSF-2.0"),
    (r"This is free and unencumbered software released into the public domain", "Unlicense"),
)
# Wheels whose metadata declares no licence we can read, checked by hand: distribution -> licence.
LICENCE_OVERRIDES: dict[str, str] = {}


@dataclass
class WheelLicence:
    name: str
    version: str
    licence: str | None  # None: unreadable (the build and --check fail)
    source: str  # where it was read: License-Expression, License, classifier, licence file, build.py
    files: list[str]  # licence texts inside the wheel
    home: str


def _licence_files(zf: zipfile.ZipFile, meta: email.message.Message) -> list[str]:
    """Licence texts in the wheel's .dist-info: those METADATA names (License-File), then LICENSE/COPYING/NOTICE."""
    names = zf.namelist()
    prefix = next((n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")),
                  "") + "/"
    declared, present = meta.get_all("License-File") or [], set(names)
    found = [n for f in declared for n in (f"{prefix}licenses/{f}", prefix + f) if n in present]
    found += [n for n in names if n.startswith(prefix) and not n.endswith("/")
              and re.match(r"(licen[cs]e|copying|notice)", n.rsplit("/", 1)[-1], re.I)]
    return list(dict.fromkeys(found))


def licence_from_metadata(meta: email.message.Message, texts: list[str] = ()) -> tuple[str | None, str]:
    """(licence, where it was read) from METADATA: License-Expression, else a short License field, else the
    License classifiers, else a licence recognised in the License field or ``texts`` (licence files), else
    LICENCE_OVERRIDES; (None, "") when there is none."""
    field_text = meta.get("License") or ""
    short = " ".join(field_text.split())
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::") and c.split("::")[-1].strip() not in ("OSI Approved", "")]
    if meta.get("License-Expression"):
        return " ".join(meta["License-Expression"].split()), "License-Expression"
    if short and short.upper() != "UNKNOWN" and "\n" not in field_text.strip() and len(short) <= 80:
        return short, "License"
    if classifiers:
        return " / ".join(dict.fromkeys(classifiers)), "classifier"
    for pattern, spdx in LICENCE_TEXTS:
        if any(re.search(pattern, text, re.I) for text in (field_text, *texts) if text):
            return spdx, "licence file"
    name = _normal(meta.get("Name") or "")
    if name in LICENCE_OVERRIDES:
        return LICENCE_OVERRIDES[name], "build.py"
    return None, ""


def read_licence(path: Path) -> WheelLicence:
    """The licence a wheel declares (:func:`licence_from_metadata`) and its licence files."""
    meta = wheel_metadata(path)
    urls = [u.split(",", 1)[-1].strip() for u in meta.get_all("Project-URL") or []]
    with zipfile.ZipFile(path) as zf:
        files = _licence_files(zf, meta)
        texts = [zf.read(f)[:20000].decode("utf-8", "replace") for f in files[:3]]
    licence, source = licence_from_metadata(meta, texts)
    return WheelLicence(meta.get("Name", _dist_name(path.name)), meta.get("Version", "?"), licence, source, files,
                        meta.get("Home-page") or (urls[0] if urls else ""))


def check_licences(wheels: list[Path]) -> list[WheelLicence]:
    """Every wheel's licence; BuildError naming those without a readable one."""
    found = [read_licence(w) for w in wheels]
    unreadable = [w.name for w, lic in zip(wheels, found) if lic.licence is None]
    if unreadable:
        raise BuildError("no licence could be read from the metadata or licence files of "
                         + ", ".join(unreadable) + ": check each one's licence by hand and add it to "
                         "LICENCE_OVERRIDES in build.py (or drop the dependency)")
    return found


def render_notices(platform: str, licences: list[tuple[Path, WheelLicence]], plan: Plan | None) -> str:
    """THIRD_PARTY_NOTICES.txt of a full package: every bundled wheel, its licence and where its text is."""
    lines = [f"OrbitMesh {package_version()} for Blender, full package for {platform}: third-party notices", "",
             "The add-on's own files (the Python files beside this one) are GPL-3.0-or-later: see LICENSE.",
             "Blender installs the wheels in wheels/ into its extension site-packages. Each wheel is under its own",
             "licence, as its metadata declares it (below); the full licence texts are inside each wheel, in its",
             "NAME-VERSION.dist-info folder (the first one is named below).", ""]
    rows = [("wheel", "version", "runs on", "licence text in the wheel", "licence")]
    for path, lic in licences:
        more = f" (+{len(lic.files) - 1} more)" if len(lic.files) > 1 else ""
        rows.append((lic.name, lic.version, system_name(platform, wheel_floor(path.name)),
                     (lic.files[0].split("/", 1)[-1] + more) if lic.files else "-", lic.licence or "?"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    if plan is not None:
        if plan.left_out:
            lines += ["", "Not bundled, Blender ships them: "
                      + ", ".join(sorted(r.name for r in plan.left_out)) + "."]
        notes = late_notes(plan, {_dist_name(p.name): p for p, _ in licences})
        if notes:
            lines += ["", *notes]
    return "\n".join(lines).rstrip() + "\n"


def late_notes(plan: Plan, wheels: dict[str, Path]) -> list[str]:
    """One line per LATE_PACKAGES entry whose wheel needs a newer system than Blender's floor, or is missing."""
    notes = []
    floor = TARGETS[plan.platform].floor
    for r in plan.late:
        need = wheel_floor(wheels[r.name].name if r.name in wheels else r.filename)
        if need is not None and floor is not None and need > floor:
            what = LATE_PACKAGES.get(r.name, f"what {', '.join(LATE_PACKAGES)} needs")
            notes.append(f"{r.name} {r.version} needs {system_name(plan.platform, need)} (every other wheel runs on "
                         f"{system_name(plan.platform, floor)}, Blender's own floor); on an older system it cannot "
                         f"load and OrbitMesh runs without {what}, with a note in its log.")
    for name, why in plan.missing_late.items():
        notes.append(f"{name} is not bundled ({why}): OrbitMesh runs without {LATE_PACKAGES.get(name, name)}.")
    return notes


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


def write_package(target: Path, manifest: dict, wheels: list[Path], *, kind: str,
                  extra: dict[str, str] | None = None) -> Package:
    """Validate ``manifest`` against the staged files and write the zip atomically; ``extra`` adds generated
    text files (name -> text) at the package's top level."""
    with tempfile.TemporaryDirectory(prefix="orbitmesh-pkg-") as tmp:
        stage = Path(tmp)
        for src in addon_files():
            dst = stage / src.relative_to(ADDON_DIR)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        for name, text in (extra or {}).items():
            (stage / name).write_text(text, encoding="utf-8")
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
               orbitmesh_wheel: Path | None = None, torch: str = "auto") -> Package:
    """The add-on, the orbitmesh wheel and its dependency wheels for ``platform``, with THIRD_PARTY_NOTICES.txt
    (every wheel's licence; a wheel without a readable licence fails the build)."""
    if platform not in PLATFORM_TAGS:
        raise BuildError(f"unknown platform {platform!r}; use one of {', '.join(PLATFORM_TAGS)}")
    wheel = orbitmesh_wheel or build_orbitmesh_wheel()
    deps, plan = [], None
    if not skip_deps:
        deps, plan = download_dependencies(wheel, platform, BUILD_DIR / f"wheels-{platform}",
                                           pip_args=pip_args or [], torch=torch)
    wheels = [wheel, *deps]
    licences = check_licences(wheels)
    notices = render_notices(platform, list(zip(wheels, licences)), plan)
    if plan is not None:
        print(f"{platform}: {len(deps)} dependency wheels; torch: "
              f"{plan.torch or 'pip' + chr(39) + 's choice from the indexes'}")
        for note in late_notes(plan, {_dist_name(p.name): p for p in deps}):
            print(f"{platform}: note: {note}")
    manifest = load_manifest()
    manifest["platforms"] = [platform]
    return write_package(dist / f"orbitmesh-{package_version()}-{platform}.zip", manifest, wheels,
                         kind="full" + (" (orbitmesh wheel only)" if skip_deps else ""),
                         extra={NOTICES: notices})


def format_sizes(packages: list[Package]) -> str:
    rows = [("package", "kind", "files", "wheels", "size")]
    rows += [(p.path.name, p.kind, str(p.files), str(p.wheels), f"{p.size / 2**20:.2f} MiB") for p in packages]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ----- resolve only: what a full package would bundle ----------------------------------------------


def _wheel_size(url: str, timeout: float = 20.0) -> int | None:
    """A wheel's size without downloading it (a HEAD request; a local file's size); None: unknown."""
    import urllib.request

    try:
        if url.startswith("file:"):
            return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path)).stat().st_size
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as resp:
            return int(resp.headers.get("Content-Length") or 0) or None
    except (OSError, ValueError):
        return None


def report_licence(metadata: dict) -> str | None:
    """The licence in pip's report of a wheel's METADATA (its JSON form, PEP 566), by licence_from_metadata's
    rules without licence files; pip 23 leaves License-Expression out of its report, so it can be None."""
    meta = email.message.Message()
    for key, header in (("name", "Name"), ("license_expression", "License-Expression"), ("license", "License")):
        if metadata.get(key):
            meta[header] = metadata[key]
    for classifier in metadata.get("classifier", []):
        meta["Classifier"] = classifier
    return licence_from_metadata(meta)[0]


def resolve_report(platform: str, *, pip_args: list[str] = (), torch: str = "auto") -> tuple[str, bool]:
    """Resolve a full package for ``platform`` without keeping its wheels; (report text, every core dependency
    has a wheel). Sizes come from the index (HEAD requests), licences from pip's report of each wheel's metadata
    ('?' where it has none: the full build reads them from the wheels themselves)."""
    from concurrent.futures import ThreadPoolExecutor

    plan = plan_dependencies(core_requirements(), platform, pip_args=pip_args, torch=torch, diagnose=True)
    with ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(lambda r: _wheel_size(r.url), plan.bundled))
    rows = [("wheel", "version", "runs on", "size", "licence", "file")]
    for r, size in zip(plan.bundled, sizes):
        rows.append((r.name, r.version, system_name(platform, wheel_floor(r.filename)),
                     f"{size / 2**20:.1f} MiB" if size else "?", report_licence(r.metadata) or "?", r.filename))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    core_floor = max((f for r in plan.core if (f := wheel_floor(r.filename))), default=None)
    lines = [f"{platform}: {len(plan.bundled)} wheels + orbitmesh, {sum(s or 0 for s in sizes) / 2**20:.0f} MiB"
             + (" (some sizes unknown)" if None in sizes else "")
             + f"; torch: {plan.torch or 'pip' + chr(39) + 's choice from the indexes'}",
             f"  Blender's floor: {system_name(platform, TARGETS[platform].floor)}; the wheels at that floor need "
             f"{system_name(platform, core_floor)}"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    if plan.left_out:
        lines.append("  left out (Blender ships them): " + ", ".join(f"{r.name} {r.version}" for r in plan.left_out))
    lines += [f"  note: {n}" for n in late_notes(plan, {})]
    lines += [f"  NO WHEEL: {line}" for line in plan.missing_lines()]
    if not plan.missing:
        lines.append(f"  every dependency has a wheel for {platform}")
    return "\n".join(lines), not plan.missing


# ----- licences of wheels already here (--check) ----------------------------------------------------


def local_wheels() -> list[Path]:
    """The wheels earlier builds left: wheels/ (the orbitmesh wheel) and build/wheels-<platform>/."""
    return sorted(WHEELS_DIR.glob("*.whl")) + sorted(BUILD_DIR.glob("wheels-*/*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="append", default=[], metavar="PLATFORM",
                        help=f"also build a full package for PLATFORM (repeatable): {', '.join(PLATFORM_TAGS)}")
    parser.add_argument("--no-client", action="store_true", help="skip the client package")
    parser.add_argument("--skip-deps", action="store_true",
                        help="full packages bundle only the orbitmesh wheel (no dependency download; for testing)")
    parser.add_argument("--torch-index-url", help="extra index for torch, e.g. https://download.pytorch.org/whl/cu124")
    parser.add_argument("--torch", default="auto", metavar="auto|index|VERSION",
                        help="auto (default): a torch wheel in pip's find-links (a local wheel folder, e.g. a CPU "
                             "build) for the platform, else pip's choice; index: pip's choice from the indexes; "
                             "VERSION: pin it (e.g. 2.5.1+cu124). --torch-index-url implies index")
    parser.add_argument("--pip-arg", action="append", default=[], help="extra argument for pip (repeatable)")
    parser.add_argument("--resolve", action="extend", nargs="+", default=[], metavar="PLATFORM",
                        help="only resolve full packages for PLATFORMs (nothing is downloaded): print the wheels "
                             "each would bundle and any dependency without a wheel there (exit 1)")
    parser.add_argument("--dist", default=str(ROOT / "dist"), help="output folder (default dist/)")
    parser.add_argument("--check", action="store_true",
                        help="only validate the source manifest, that contract.py is current and that every wheel "
                             "an earlier build left (wheels/, build/wheels-*/) has a readable licence")
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
            wheels = local_wheels()
            check_licences(wheels)
            print(f"{MANIFEST}: valid (orbitmesh {version})"
                  + (f"; licences read from {len(wheels)} wheels" if wheels else ""))
            return 0
        pip_args = list(args.pip_arg)
        torch = args.torch
        if args.torch_index_url:
            pip_args += ["--extra-index-url", args.torch_index_url]
            torch = "index" if torch == "auto" else torch
        if args.resolve:
            unknown = [p for p in args.resolve if p not in PLATFORM_TAGS]
            if unknown:
                raise BuildError(f"unknown platform {', '.join(unknown)}; use one of {', '.join(PLATFORM_TAGS)}")
            complete = True
            for platform in args.resolve:
                text, ok = resolve_report(platform, pip_args=pip_args, torch=torch)
                print(text, flush=True)
                complete &= ok
            return 0 if complete else 1
        dist = Path(args.dist)
        packages = [] if args.no_client else [build_client(dist)]
        wheel = build_orbitmesh_wheel() if args.full else None
        for platform in args.full:
            packages.append(build_full(dist, platform, skip_deps=args.skip_deps, pip_args=pip_args,
                                       orbitmesh_wheel=wheel, torch=torch))
        if not packages:
            raise BuildError("nothing to build: drop --no-client or add --full PLATFORM")
        print(format_sizes(packages))
        return 0
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
