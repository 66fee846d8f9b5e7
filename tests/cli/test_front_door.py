"""The torch-free front door: `orbitmesh --version/--help`, `serve --help`, the parser and `import orbitmesh`
work without torch, and the top-level exports (`from orbitmesh import generate, ...`) are resolved lazily.

Each check runs in a fresh interpreter: ``sys.modules['torch'] = None`` makes ``import torch`` raise
(as where torch is not installed), and a plain interpreter shows what building the parser imports.
"""

from __future__ import annotations

import json

import pytest

import orbitmesh

NO_TORCH = ("torch",)  # as where torch is not installed


def test_version_without_torch_is_exactly_the_issue_command(run_python):
    proc = run_python("from orbitmesh.cli import main; main(['--version'])", without=NO_TORCH)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"orbitmesh {orbitmesh.__version__}"


def test_help_and_serve_help_without_torch(run_python):
    for argv, expected in ((["--help"], ["generate", "doctor", "serve", "bench", "train"]),
                           (["serve", "--help"], ["--port", "--allow-remote", "--token"]),
                           (["bench", "quality", "--help"], ["--count", "--sheet"])):
        proc = run_python(f"from orbitmesh.cli import main; main({argv!r})", without=NO_TORCH)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert all(word in proc.stdout for word in expected), (argv, proc.stdout)


@pytest.fixture
def modules_after(run_python):
    """modules_after(code, no_torch=...) -> the module names loaded after running ``code`` in a fresh
    interpreter (where torch is not importable, with ``no_torch``)."""

    def run(code: str, *, no_torch: bool) -> set[str]:
        proc = run_python(code + "\nimport json, sys; "
                          "print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))",
                          without=NO_TORCH if no_torch else ())
        assert proc.returncode == 0, proc.stderr
        return set(json.loads(proc.stdout.strip().splitlines()[-1]))

    return run


def test_building_the_parser_imports_neither_torch_nor_the_tools(modules_after):
    tools = ("orbitmesh.training", "orbitmesh.data", "orbitmesh.bench")
    for no_torch in (False, True):
        loaded = modules_after("from orbitmesh.cli import build_parser; build_parser()", no_torch=no_torch)
        assert "orbitmesh.cli.bench" in loaded and "orbitmesh.cli.serve" in loaded  # the parser was built
        assert not {m for m in loaded if m == "torch" or m.startswith("torch.")}
        assert not {m for m in loaded if m.startswith(tools)}
    loaded = modules_after("from orbitmesh.cli import main\ntry:\n    main(['--version'])\n"
                            "except SystemExit:\n    pass", no_torch=False)
    assert "torch" not in loaded and "orbitmesh.cli.doctor" in loaded


def test_import_orbitmesh_is_torch_free_and_exports_lazily(run_python, modules_after):
    loaded = modules_after("import orbitmesh; assert orbitmesh.__version__", no_torch=False)
    assert "torch" not in loaded and "orbitmesh.pipeline" not in loaded
    # the request contract is torch-free, so these two resolve without torch
    proc = run_python("from orbitmesh import GenerateRequest, GenerateResult; "
                      "print(GenerateRequest.__module__, GenerateResult.__module__)", without=NO_TORCH)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["orbitmesh.pipeline.request", "orbitmesh.pipeline.request"]


def test_top_level_exports_are_the_pipeline_objects():
    import orbitmesh.pipeline.generate as generate_module
    import orbitmesh.pipeline.request as request
    from orbitmesh import GenerateRequest, GenerateResult, generate

    assert generate is generate_module.generate
    assert GenerateRequest is request.GenerateRequest and GenerateResult is request.GenerateResult
    assert set(orbitmesh.__all__) == {"__version__", *orbitmesh._LAZY_EXPORTS}
    assert set(orbitmesh.__all__) <= set(dir(orbitmesh))
    with pytest.raises(AttributeError, match="no_such_name"):
        orbitmesh.no_such_name  # noqa: B018
