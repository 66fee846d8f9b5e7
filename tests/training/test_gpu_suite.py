"""The GPU suite (benchmarks/gpu_suite.py): its dry run on the CPU reports every section with pymeshlab and the
server packages unimportable (the GPU machine has neither), and the runner skips what does not fit the budget,
reports a failing or overrunning section and goes on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbitmesh.bench import gpu_suite
from orbitmesh.bench.gpu_suite import SECTION_NAMES, SectionSpec, format_table, run_suite

REPO = Path(__file__).resolve().parents[2]
# what the GPU machine lacks and the suite must not need: blocked as `sys.modules[name] = None` (import fails)
BLOCKED = ("pymeshlab", "fastapi", "uvicorn", "starlette", "trimesh")
FAST_STAGES = {"preprocess", "lrm", "grid_query", "carve", "mesh", "export"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """(exit code, stdout, the JSON file's dict, work folder) of one dry run in a fresh interpreter."""
    tmp = tmp_path_factory.mktemp("gpu-suite")
    out, work = tmp / "gpu-suite.json", tmp / "work"
    code = (f"import sys, runpy\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
            f"sys.argv = ['benchmarks/gpu_suite.py', '--dry-run', '--json', '--out', {str(out)!r}, "
            f"'--work-dir', {str(work)!r}]\nrunpy.run_path('benchmarks/gpu_suite.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text()), work


@pytest.mark.slow
def test_dry_run_reports_every_section_as_json_and_a_table(dry_run):
    stdout, result, _ = dry_run
    assert json.loads(stdout.strip().splitlines()[-1]) == result  # --json: the last line is the file's object
    assert result["dry_run"] is True and result["device"] == "cpu" and result["pymeshlab_loaded"] is False
    assert list(result["sections"]) == list(SECTION_NAMES)
    for name, entry in result["sections"].items():
        assert entry["status"] == "done", (name, entry.get("error"))
        assert isinstance(entry["seconds"], float) and entry["seconds"] > 0 and "budget_s" in entry, name
        assert name in stdout  # a row of the table
    assert "torch" in result["environment"] and "fast mode, warm (s)" in stdout


@pytest.mark.slow
def test_dry_run_sections_measure_what_they_promise(dry_run):
    _, result, work = dry_run
    s = result["sections"]
    for name in ("fast_vfusion3d", "fast_triposr"):
        assert s[name]["parameters"] > 0 and s[name]["cold_s"] > 0 and "density_shift" in s[name]
        assert set(s[name]["runs"]) == {"32", "48"}
        for run in s[name]["runs"].values():
            assert set(run["stages"]) == FAST_STAGES and run["encoder_s"] > 0 and run["transformer_s"] > 0
            assert run["glb_bytes"] > 0 and run["mesh"]["faces"] > 0 and run["grid"]["inside_fraction"] > 0
    assert s["fast_triposr"]["density_shift"] != 0.0  # TripoSR's threshold 25: the bias was moved onto it
    for tag in ("no_offload", "offload"):
        orbit = s["sv3d_orbit"][tag]
        assert orbit["s_per_step"] > 0 and orbit["total_s"] > 0 and orbit["peak_vram_gb"] is None  # CPU: no VRAM
    assert {"orbit", "lrm", "align", "refine", "grid_query", "mesh"} <= set(s["quality"]["stages"])
    assert s["quality"]["glb_bytes"] > 0 and s["quality"]["orbit_steps"] == 2
    assert s["text_to_image"]["steps"] == 2 and s["text_to_image"]["size"] == "64x64"  # the tiny pipeline
    assert set(s["training"]["stages"]) == {"1", "2"} and s["training"]["full_run_minutes_estimate"] > 0
    assert all(st["steps_per_s"] > 0 for st in s["training"]["stages"].values())
    # the jobs really ran through the pipeline: one GLB per job (cold + two warm per model, one quality job)
    for name, jobs in (("fast_vfusion3d", 3), ("fast_triposr", 3), ("quality", 1)):
        assert len(list((work / name / "jobs").glob("*/model.glb"))) == jobs, name


def test_sections_that_do_not_fit_the_budget_are_skipped_with_the_reason(tmp_path):
    out = tmp_path / "suite.json"
    result = run_suite(budget_s=5, device="cpu", out=out, work_dir=tmp_path / "work")  # a real run's minimums
    assert [e["status"] for e in result["sections"].values()] == ["skipped"] * len(SECTION_NAMES)
    assert all("budget left" in e["reason"] and e["seconds"] == 0.0 for e in result["sections"].values())
    assert json.loads(out.read_text())["sections"] == result["sections"]
    assert "skipped" in format_table(result)


def test_a_failing_or_overrunning_section_is_reported_and_the_suite_goes_on(tmp_path, monkeypatch):
    def boom(run):
        run.result["measured_before"] = 1.5
        raise RuntimeError("the GPU caught fire")

    def slow(run):
        time.sleep(30)

    def partial(run):
        if run.need(1e6, "a part that cannot fit"):
            run.result["ran"] = True
        run.result["rest"] = "done"

    specs = (SectionSpec("boom", 10, 0.01, "raises", boom), SectionSpec("slow", 0.5, 0.01, "overruns", slow),
             SectionSpec("partial", 10, 0.01, "skips a part", partial))
    monkeypatch.setattr(gpu_suite, "SECTIONS", specs)
    monkeypatch.setattr(gpu_suite, "SECTION_NAMES", tuple(s.name for s in specs))
    result = run_suite(budget_s=20, device="cpu", out=tmp_path / "suite.json")
    boom_, slow_, partial_ = (result["sections"][n] for n in ("boom", "slow", "partial"))
    assert boom_["status"] == "failed" and boom_["error"]["message"] == "the GPU caught fire"
    assert boom_["measured_before"] == 1.5 and "RuntimeError" in boom_["error"]["traceback"]
    assert slow_["status"] == "failed" and slow_["error"]["error"] == "SectionTimeout"
    assert partial_["status"] == "done" and partial_["rest"] == "done" and "ran" not in partial_
    assert partial_["skipped_parts"][0]["part"] == "a part that cannot fit"


def test_unknown_sections_are_refused(tmp_path):
    with pytest.raises(gpu_suite.InputError, match="unknown section"):
        run_suite(sections=["fast_vfusion3d", "warp_drive"], out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
