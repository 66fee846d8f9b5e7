"""build.py: manifest validation, client and full extension zips (no dependency downloads here)."""

from __future__ import annotations

import ast
import importlib.util
import json
import py_compile
import tomllib
import zipfile
from pathlib import Path

import pytest


def manifest_of(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return tomllib.loads(zf.read("blender_manifest.toml").decode("utf-8"))


def blender_validator():
    """Blender's own manifest checker (bl_pkg's blender_ext.py inside the bpy wheel), if installed."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        return None
    mod_spec = importlib.util.spec_from_file_location("blender_ext_for_tests", found[-1])
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def built(tmp_path_factory, build) -> dict:
    dist = tmp_path_factory.mktemp("dist")
    wheel = build.build_orbitmesh_wheel(tmp_path_factory.mktemp("wheels"))
    return {"client": build.build_client(dist), "wheel": wheel,
            "full": build.build_full(dist, "linux-x64", skip_deps=True, orbitmesh_wheel=wheel)}


def test_source_manifest_is_valid(build):
    data = build.load_manifest()
    assert build.validate_manifest(data, version=build.package_version()) == []
    assert data["id"] == "orbitmesh" and set(data["permissions"]) == {"network", "files"}
    assert data["blender_version_min"] == "4.2.0"


@pytest.mark.parametrize("change, expected", [
    ({"id": "orbit-mesh"}, '"id"'),
    ({"tagline": "Makes meshes."}, "punctuation"),
    ({"tagline": "x" * 65}, "at most 64"),
    ({"permissions": {"internet": "Downloads things"}}, "internet"),
    ({"version": "1.0"}, "semantic version"),
    ({"version": "0.2.0"}, "differs from orbitmesh.__version__"),
    ({"tags": ["Mesh", "Cool Stuff"]}, "tags"),
    ({"platforms": ["linux-x86"]}, "platforms"),
    ({"platforms": ["linux-x64"], "wheels": ["wheels/x.whl"]}, "./wheels/NAME.whl"),
    ({"wheels": ["./wheels/orbitmesh-0.1.0-py3-none-any.whl"]}, "platforms"),
    ({"blender_version_min": "4.1.0"}, "4.2.0"),
    ({"license": "GPL"}, "license"),
])
def test_validate_manifest_names_the_problem(change, expected, build):
    data = {**build.load_manifest(), **change}
    errors = build.validate_manifest(data, version=build.package_version())
    assert errors and any(expected in e for e in errors), errors


def test_missing_keys_are_listed(build):
    data = build.load_manifest()
    del data["version"], data["maintainer"]
    assert build.validate_manifest(data) == ['missing "version"', 'missing "maintainer"']


def test_dump_manifest_round_trips(build):
    data = {**build.load_manifest(), "platforms": ["linux-x64"], "wheels": ["./wheels/a-1-py3-none-any.whl"]}
    assert tomllib.loads(build.dump_manifest(data)) == data


def test_client_zip(built, build):
    pkg = built["client"]
    assert pkg.path.name == f"orbitmesh-{build.package_version()}-client.zip"
    with zipfile.ZipFile(pkg.path) as zf:
        names = zf.namelist()
    assert {"blender_manifest.toml", "__init__.py", "contract.py", "core/__init__.py", "core/client.py",
            "core/backends.py", "core/jobs.py", "ops_generate.py", "ops_server.py", "ops_jobs.py", "panels.py",
            "importer.py", "preferences.py", "properties.py"} <= set(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.startswith("wheels/") for n in names)
    manifest = manifest_of(pkg.path)
    assert "platforms" not in manifest and "wheels" not in manifest and "build" not in manifest
    assert manifest["version"] == build.package_version() and pkg.wheels == 0


def test_addon_sources_compile_and_avoid_heavy_imports(repo_root):
    heavy = {"torch", "diffusers", "transformers", "orbitmesh", "pymeshlab", "requests"}
    for path in (repo_root / "blender_addon").rglob("*.py"):
        py_compile.compile(str(path), doraise=True)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.split(".")[0] not in heavy, f"{path.name} imports {name} (Blender does not have it)"


def test_full_zip_with_orbitmesh_wheel_only(built, build):
    pkg, wheel = built["full"], built["wheel"]
    assert pkg.path.name == f"orbitmesh-{build.package_version()}-linux-x64.zip" and pkg.wheels == 1
    manifest = manifest_of(pkg.path)
    assert manifest["platforms"] == ["linux-x64"]
    assert manifest["wheels"] == [f"./wheels/{wheel.name}"]
    with zipfile.ZipFile(pkg.path) as zf:
        assert f"wheels/{wheel.name}" in zf.namelist()
    with zipfile.ZipFile(wheel) as wz:
        names = wz.namelist()
    assert "orbitmesh/__init__.py" in names and "orbitmesh/cli/generate.py" in names
    assert not any(n.startswith(("tests/", "blender_addon/")) for n in names)
    # The runtime only: the orbitmesh[train] tools stay out (the bench/train commands then print the install hint).
    from orbitmesh.cli.optional import TOOL_PACKAGES

    assert {f"orbitmesh.{p}" for p in build.TOOL_PACKAGES} == set(TOOL_PACKAGES)
    assert not any(n.startswith(tuple(p.replace(".", "/") + "/" for p in TOOL_PACKAGES)) for n in names)
    assert "orbitmesh/cli/optional.py" in names and "orbitmesh/cli/bench.py" in names


def test_blender_accepts_both_manifests(built):
    ext = blender_validator()
    if ext is None:
        pytest.skip("bpy (with Blender's extension tools) is not installed")
    for pkg in (built["client"], built["full"]):
        assert ext.pkg_manifest_is_valid_or_error_all(manifest_of(pkg.path), from_repo=False, strict=True) is None
    broken = {**manifest_of(built["client"].path), "tagline": "Ends with a dot."}
    assert ext.pkg_manifest_is_valid_or_error_all(broken, from_repo=False, strict=True)  # and it can fail


def test_dependency_download_command_and_exclusions(tmp_path, monkeypatch, build):
    seen = {}

    def fake_run(cmd):  # no network here: record the pip command, drop wheels where pip would
        seen["cmd"] = cmd
        out = Path(cmd[cmd.index("-d") + 1])
        for name in ("torch-2.5.1-cp311-cp311-manylinux_2_28_x86_64.whl",
                     "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl",
                     "Pillow-11.0.0-cp311-cp311-manylinux_2_28_x86_64.whl", "orbitmesh-0.1.0-py3-none-any.whl",
                     "charset_normalizer-3.4.0-py3-none-any.whl"):
            (out / name).write_bytes(b"")

    monkeypatch.setattr(build, "_run", fake_run)
    wheels = build.download_dependencies(tmp_path / "orbitmesh-0.1.0-py3-none-any.whl", "linux-x64",
                                         tmp_path / "deps", pip_args=["--extra-index-url", "https://example/whl"])
    assert [w.name for w in wheels] == ["Pillow-11.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                                        "torch-2.5.1-cp311-cp311-manylinux_2_28_x86_64.whl"]
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and cmd[cmd.index("--abi") + 1] == "cp311"
    assert "manylinux_2_28_x86_64" in cmd and "win_amd64" not in cmd
    assert cmd[-3:-1] == ["--extra-index-url", "https://example/whl"]


def test_cli_reports_invalid_manifest(tmp_path, monkeypatch, capsys, build):
    addon = tmp_path / "blender_addon"
    addon.mkdir()
    (addon / "__init__.py").write_text("")
    (addon / "blender_manifest.toml").write_text((build.ADDON_DIR / "blender_manifest.toml").read_text()
                                                 .replace('id = "orbitmesh"', 'id = "orbit mesh"'))
    monkeypatch.setattr(build, "ADDON_DIR", addon)
    assert build.main(["--dist", str(tmp_path / "dist")]) == 2
    err = capsys.readouterr().err
    assert "invalid" in err and '"id"' in err
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_cli_builds_and_prints_sizes(tmp_path, capsys, build):
    assert build.main(["--dist", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "orbitmesh-0.1.0-client.zip" in out and "MiB" in out
    assert json.loads(json.dumps(manifest_of(tmp_path / "orbitmesh-0.1.0-client.zip")))["id"] == "orbitmesh"


def test_addon_contract_is_generated_and_current(tmp_path, monkeypatch, capsys, build):
    from orbitmesh.pipeline.request import addon_contract

    assert build.contract_is_current(), "run `python build.py --write-contract`"
    namespace: dict = {}
    exec(compile(build.CONTRACT.read_text(encoding="utf-8"), "contract.py", "exec"), namespace)
    assert namespace["SETTINGS"] == addon_contract()["settings"]  # the generated file holds the contract's data
    # A stale copy fails the check and every build, naming the fix; --write-contract mends it.
    stale = tmp_path / "contract.py"
    stale.write_text(build.CONTRACT.read_text(encoding="utf-8").replace("'seed'", "'seeds'"), encoding="utf-8")
    monkeypatch.setattr(build, "CONTRACT", stale)
    assert build.main(["--check"]) == 2
    assert "--write-contract" in capsys.readouterr().err
    assert build.main(["--write-contract"]) == 0 and build.contract_is_current()
    assert build.main(["--check"]) == 0
