"""Runtime apart from tools: orbitmesh.training / .data / .bench (the `orbitmesh[train]` part) are never
imported by the runtime, and `orbitmesh train` / `orbitmesh bench` say how to install them when missing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import orbitmesh
from orbitmesh.cli.optional import INSTALL_TOOLS, TOOL_PACKAGES, import_tool, is_tool_module

PACKAGE = Path(orbitmesh.__file__).parent
# The two commands that are the tools' front door name them as strings for import_tool (inside run()).
TOOL_COMMANDS = {"cli/train.py", "cli/bench.py", "cli/optional.py"}
TOOL_NAME = re.compile(r"orbitmesh\.(training|data|bench)(\.\w+)*\.?")


def runtime_modules() -> list[Path]:
    tool_dirs = {pkg.split(".")[1] for pkg in TOOL_PACKAGES}
    files = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in tool_dirs]
    assert len(files) > 50 and PACKAGE / "cli" / "bench.py" in files
    return sorted(files)


def imported_names(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in ``source`` (a module of ``package``)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from ..training import x
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            # `from orbitmesh import data` imports the submodule orbitmesh.data
            names += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return names


def test_import_walker_sees_every_kind_of_import():
    """The walker itself finds planted tool imports, relative ones included (so the real check can fail)."""
    source = "from ..training import Trainer\nfrom orbitmesh import bench\nimport orbitmesh.data.sdf as s\n" \
             "def f():\n    from .. import data\n"
    found = [name for _, name in imported_names(source, "orbitmesh.cli") if is_tool_module(name)]
    assert found == ["orbitmesh.training", "orbitmesh.training.Trainer", "orbitmesh.bench", "orbitmesh.data.sdf",
                     "orbitmesh.data"]


def test_runtime_never_imports_the_tools():
    offenders = []
    for path in runtime_modules():
        rel = path.relative_to(PACKAGE).as_posix()
        source = path.read_text(encoding="utf-8")
        package = ".".join(["orbitmesh", *path.relative_to(PACKAGE).parent.parts])
        offenders += [f"{rel}:{line} imports {name}" for line, name in imported_names(source, package)
                      if is_tool_module(name)]
        if rel in TOOL_COMMANDS:
            continue
        # a module name in a string (importlib.import_module("orbitmesh.bench...")) counts as an import
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and TOOL_NAME.fullmatch(node.value):
                offenders.append(f"{rel}:{node.lineno} names {node.value!r}")
    assert not offenders, "the runtime must not import the optional tools:\n" + "\n".join(offenders)


def test_runtime_modules_import_with_the_tools_missing(run_python):
    """Every runtime module imports with the tool packages unimportable (as in the add-on's wheel)."""
    names = sorted(".".join(["orbitmesh", *p.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(".__init__")
                   for p in runtime_modules() if p.name != "__main__.py")
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    try:\n        importlib.import_module(name)\n"
            "    except ImportError as exc:\n        if (exc.name or '').startswith(('orbitmesh.training', "
            "'orbitmesh.data', 'orbitmesh.bench')):\n            raise\n"
            "print('imported', len(sys.modules))")
    proc = run_python(code, without=TOOL_PACKAGES, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("imported")


@pytest.mark.parametrize("package, argv", [
    ("orbitmesh.training", ["train", "configs/preview.toml"]),
    ("orbitmesh.data", ["train", "configs/preview.toml"]),  # the trainer's data part alone missing
    ("orbitmesh.bench", ["bench", "postprocess", "--resolution", "32", "--json"]),
    ("orbitmesh.bench", ["bench", "quality", "--count", "1"]),
])
def test_commands_say_how_to_install_the_tools(package, argv, run_python):
    proc = run_python(f"import sys\nfrom orbitmesh.cli import main\nsys.exit(main({argv!r}))", without=(package,))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # nothing ran
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: `orbitmesh {' '.join(argv[:2]) if argv[0] == 'bench' else 'train'}` needs "
                               "the optional training and benchmark tools")
    assert package in lines[0]
    assert lines[-1] == f"fix: {INSTALL_TOOLS}" == 'fix: pip install "orbitmesh[train]"'


def test_import_tool_only_turns_a_missing_tool_into_the_hint():
    assert import_tool("orbitmesh.bench.postprocess", "bench postprocess").__name__ == "orbitmesh.bench.postprocess"
    with pytest.raises(ModuleNotFoundError) as info:  # not a tool package: installing the tools would not help
        import_tool("orbitmesh.no_such_module", "x")
    assert info.value.name == "orbitmesh.no_such_module"
