"""`orbitmesh bench`: the CLI's argument declarations match each bench's `run(**keywords)`, the CLI hands
plain keywords (no argparse objects) to it, and the bench functions run from Python."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json

import pytest

from orbitmesh.cli import bench as cli_bench
from orbitmesh.cli import build_parser, main
from orbitmesh.errors import InputError

BENCH_NAMES = ["postprocess", "lrm", "quality", "texture-projection", "refinement", "text-to-image"]


def declared_actions(name: str) -> dict[str, argparse.Action]:
    """dest -> argparse action of each argument the CLI declares for bench ``name``."""
    parser = argparse.ArgumentParser()
    return {action.dest: action for action in (parser.add_argument(*a.flags, **a.options)
                                               for a in cli_bench.BENCHES[name].args)}


def _plain(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def test_the_bench_names_are_the_contract():
    assert sorted(cli_bench.BENCHES) == sorted(BENCH_NAMES)
    parser = build_parser()
    for name in BENCH_NAMES:
        args = parser.parse_args(["bench", name, "--json"])
        assert args.bench == name and args.json is True and callable(args.func)


@pytest.mark.parametrize("name", BENCH_NAMES)
def test_cli_arguments_are_the_keywords_of_run_with_the_same_defaults(name):
    """Every declared argument is a keyword-only parameter of run() with the same default, and back."""
    run = importlib.import_module(f"orbitmesh.bench.{cli_bench.BENCHES[name].module}").run
    params = inspect.signature(run).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()), name
    actions = declared_actions(name)
    assert set(actions) == set(params), name
    for dest, action in actions.items():
        assert _plain(action.default) == _plain(params[dest].default), (name, dest)
        if action.choices is not None:  # the default is one of (or, for nargs, a subset of) the choices
            default = params[dest].default
            assert set(default if isinstance(default, tuple) else [default]) <= set(action.choices), (name, dest)


def test_cli_passes_plain_keywords_and_prints_json(monkeypatch, capsys):
    import orbitmesh.bench.postprocess as postprocess

    seen: dict = {}

    def fake_run(**keywords):
        seen.update(keywords)
        return {"bench": "postprocess", "seconds_total": 1.5}

    monkeypatch.setattr(postprocess, "run", fake_run)
    assert main(["bench", "postprocess", "--resolution", "48", "64", "--paths", "plain", "--json"]) == 0
    assert seen == {"resolution": [48, 64], "target_faces": 20000, "texture_size": 1024, "paths": ["plain"],
                    "repeat": 1}
    assert json.loads(capsys.readouterr().out) == {"bench": "postprocess", "seconds_total": 1.5}

    import orbitmesh.bench.lrm as lrm

    seen.clear()
    monkeypatch.setattr(lrm, "run", fake_run)
    assert main(["bench", "lrm", "--no-blob", "--grid", "32", "--config", "tiny"]) == 0
    assert seen["blob"] is False and seen["grid"] == [32] and seen["baseline"] == "extrapolate"
    assert seen["config"] == "tiny" and "seconds_total" in capsys.readouterr().out  # lrm's own table


def test_generic_table_formats_floats():
    assert cli_bench.format_table({"total_s": 1.23456, "model": "m"}).splitlines() == ["total_s  1.235",
                                                                                      "model    m"]


def test_postprocess_runs_from_python_with_plain_arguments(tmp_path):
    from orbitmesh.bench.postprocess import format_table, run

    result = run(resolution=(48,), target_faces=1500, texture_size=128, paths=("orbitmesh",))
    assert result["bench"] == "postprocess" and result["resolution"] == 48 and result["path"] == "orbitmesh"
    assert abs(result["faces"] - 1500) <= 100 and 0.3 < result["uv_coverage"] < 1.0
    assert [r["path"] for r in result["runs"]] == ["orbitmesh"]
    assert "48^3" in format_table(result)
    with pytest.raises(InputError, match="no-such-path"):
        run(resolution=(48,), paths=("no-such-path",))


def test_lrm_rejects_an_unknown_baseline_before_building_anything():
    from orbitmesh.bench.lrm import run

    with pytest.raises(InputError, match="baseline"):
        run(baseline="sometimes")
