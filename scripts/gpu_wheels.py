"""Wheels for the GPU machine: what its Python 3.12 lacks to run ``benchmarks/gpu_suite.py``, in one folder.

The GPU machine has no network; torch, transformers, numpy, scipy, scikit-image, Pillow, safetensors,
huggingface-hub, PyYAML and tqdm are installed there, so only diffusers, xatlas and fast-simplification
(cp312 manylinux x86_64) travel, with OrbitMesh itself as a wheel (``pip wheel --no-deps``). pymeshlab does not:
the suite never imports it. Everything that travels (the repository's tracked and untracked-not-ignored files
plus this folder) must stay within the device's 64 MiB; the script checks that and prints the command.

    python scripts/gpu_wheels.py                      # -> dist/gpu-wheels/ (ignored by git), size check, command
    python scripts/gpu_wheels.py --out other/folder --pin diffusers==0.42.1
    python scripts/gpu_wheels.py --no-orbitmesh       # the suite then runs from backend/ (saves ~11 MB)

Versions: those installed here (the ones the tests ran with), else the fallbacks below; ``--pin`` overrides.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = "dist/gpu-wheels"
LIMIT_MIB = 64  # the device tool: tracked + untracked-not-ignored files + carried paths, per call
# name -> version when it is not installed here (diffusers 0.42 needs huggingface-hub >= 1.32 and
# safetensors >= 0.8, which the GPU machine has: 1.33 and 0.8.0 when last listed)
FALLBACK_VERSIONS = {"diffusers": "0.42.1", "xatlas": "0.0.11", "fast-simplification": "0.2.0"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def versions(pins: list[str]) -> dict[str, str]:
    """name -> version: ``--pin NAME==VERSION`` first, then the installed version, then the fallback."""
    out = {}
    for name, fallback in FALLBACK_VERSIONS.items():
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = fallback
    for pin in pins:
        name, sep, version = pin.partition("==")
        if not sep or name not in out:
            sys.exit(f"error: --pin takes NAME==VERSION with NAME one of {', '.join(out)}, got {pin!r}")
        out[name] = version
    return out


def download(out: Path, wanted: dict[str, str]) -> None:
    """The cp312 manylinux x86_64 wheels of ``wanted`` (no dependencies) into ``out``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none", "-d", str(out)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + [f"{n}=={v}" for n, v in wanted.items()], check=True)


def build_orbitmesh(out: Path) -> None:
    """OrbitMesh's own wheel (pure Python, the bundled preview model included) from this checkout."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)], check=True)


def travelling_bytes() -> int:
    """Bytes of the files a device call sends besides carried paths: tracked and untracked-not-ignored ones."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.split(b"\0")
    paths = {REPO / p.decode() for p in listed if p}
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def device_command(folder: str) -> str:
    """The device tool's one-liner (run in the repository root, ``folder`` carried)."""
    return (f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
            f"{folder}/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && "
            f"python3 benchmarks/gpu_suite.py --json --out $OUT/gpu-suite.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"wheel folder, relative to the repository ({DEFAULT_OUT})")
    parser.add_argument("--pin", action="append", default=[], metavar="NAME==VERSION", help="another version")
    parser.add_argument("--no-orbitmesh", action="store_true", help="leave out OrbitMesh's own wheel")
    args = parser.parse_args(argv)
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):  # one version of each: two would stop the install on the device
        old.unlink()
    wanted = versions(args.pin)
    download(out, wanted)
    if not args.no_orbitmesh:
        build_orbitmesh(out)
    wheels = sorted(out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels)
    tree = travelling_bytes()
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    total = (size + tree) / 2**20
    print(f"{size / 2**20:7.2f} MiB  wheels in {args.out}\n{tree / 2**20:7.2f} MiB  the working tree that travels\n"
          f"{total:7.2f} MiB  in all (limit {LIMIT_MIB} MiB)")
    if total > LIMIT_MIB:
        print(f"error: {total:.1f} MiB is over the device's {LIMIT_MIB} MiB", file=sys.stderr)
        print("fix: --no-orbitmesh (the suite runs from backend/), or move large untracked files out", file=sys.stderr)
        return 1
    rel = args.out.rstrip("/")
    print(f"\nOn the GPU machine (device tool: carry [\"{rel}\"], timeout_s 600):\n{device_command(rel)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
