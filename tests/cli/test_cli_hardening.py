"""`orbitmesh generate` against hostile or unlucky use (issue 17, item 9): Ctrl-C / SIGTERM mid-job, an output
path that cannot be written, an input that is not a regular file, and the torch-free `--version` / `doctor`.

Tests run as root, where chmod cannot make a folder read-only: unwritable places are /proc (genuinely) or
simulated in-process by monkeypatching the write points (os.access, tempfile.TemporaryFile, shutil.copyfile).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbitmesh.cli import main
from orbitmesh.errors import InputError, OrbitMeshError
from orbitmesh.jobs import TERMINAL, JobFolder
from orbitmesh.pipeline import generate as generate_module
from orbitmesh.pipeline.generate import check_output, generate
from orbitmesh.pipeline.request import GenerateRequest


def _cli_args(tmp_path: Path, small_request: dict) -> list[str]:
    """Options of a fast tiny-random CPU job with its job folders in tmp_path/jobs."""
    return ["--model", small_request["model"], "--mc-resolution", str(small_request["mc_resolution"]),
            "--target-faces", str(small_request["target_faces"]), "--texture-size", str(small_request["texture_size"]),
            "--output-dir", str(tmp_path / "jobs"), "--device", "cpu", "--config", str(tmp_path / "none.toml")]


def _job_records(jobs: Path) -> list[dict]:
    """Every job.json under ``jobs`` (nested ones included)."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(jobs.rglob("job.json"))]


# ----- Ctrl-C and SIGTERM ------------------------------------------------------------------------------------

# The real CLI in a child process whose mesh stage waits (in time.sleep, no progress calls, as a long native op
# would) until the test signals it: the signal always lands mid-job, however slow or fast the machine is.
# SIGINT is reset to Python's handler as in a terminal: a child started from a shell without job control
# inherits SIGINT ignored.
WAITING_CLI = """
import signal, sys, time
from orbitmesh.pipeline import output

signal.signal(signal.SIGINT, signal.default_int_handler)

def wait_for_the_signal(self, ctx):
    ctx.progress(self.name, 0, 1, "waiting for the test's signal")
    time.sleep(600)

output.MeshStage.run = wait_for_the_signal
from orbitmesh.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_for_stage(proc: subprocess.Popen, jobs: Path, stage: str, deadline_s: float = 240) -> dict:
    """Poll job.json under ``jobs`` until the job runs ``stage``; fails if the child ends first."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the child ended (rc {proc.returncode}) before stage {stage}: {err[-3000:]}")
        for record in _job_records(jobs) if jobs.is_dir() else ():
            if record.get("status") == "running" and str(record.get("stage") or "").endswith(f"-{stage}"):
                return record
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the job did not reach stage {stage} in {deadline_s} s")


@pytest.mark.parametrize(("signum", "progress", "code", "message"), [
    (signal.SIGINT, "text", 130, "interrupted (Ctrl-C)"),
    (signal.SIGTERM, "jsonl", 143, "terminated (SIGTERM)"),
])
def test_signal_mid_job_ends_the_job_cancelled(tmp_path, sample_photo, small_request, signum, progress, code,
                                               message):
    out = tmp_path / "out.glb"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", WAITING_CLI, "generate", sample_photo, "-o", str(out),
            *_cli_args(tmp_path, small_request), "--progress", progress]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_stage(proc, tmp_path / "jobs", "mesh")
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    records = _job_records(tmp_path / "jobs")
    assert len(records) == 1 and all(r["status"] in TERMINAL for r in records)
    (record,) = records
    assert record["status"] == "cancelled" and record["finished"] >= record["started"]
    assert record["error"] == {"stage": "mesh", "message": message}
    assert "model.glb" not in record["artefacts"] and not out.exists()
    assert not list((tmp_path / "jobs").rglob("*.glb"))
    if progress == "jsonl":
        assert json.loads(stdout.splitlines()[-1]) == {"event": "cancelled"}
    else:
        assert f"{message}: job cancelled" in stderr


def test_keyboard_interrupt_in_a_stage_marks_the_job_cancelled(tmp_path, sample_photo, small_request,
                                                               cpu_settings, monkeypatch):
    from orbitmesh.pipeline import output

    def interrupted(self, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(output.MeshStage, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(GenerateRequest(image_path=sample_photo, **small_request), settings=cpu_settings(tmp_path))
    (record,) = _job_records(tmp_path / "jobs")
    assert record["status"] == "cancelled"
    assert record["error"] == {"stage": "mesh", "message": "interrupted (Ctrl-C)"}


def test_an_error_before_the_first_stage_still_ends_the_job(tmp_path, sample_photo, small_request, cpu_settings,
                                                            monkeypatch):
    def broken_seed(seed: int) -> None:
        raise RuntimeError("seeding broke")

    monkeypatch.setattr(generate_module, "_seed", broken_seed)
    with pytest.raises(RuntimeError, match="seeding broke"):
        generate(GenerateRequest(image_path=sample_photo, **small_request), settings=cpu_settings(tmp_path))
    (record,) = _job_records(tmp_path / "jobs")
    assert record["status"] == "failed" and record["error"]["message"] == "seeding broke"
    assert "RuntimeError" in record["error"]["traceback"]


# ----- the output path ---------------------------------------------------------------------------------------

def test_unwritable_output_under_proc_is_an_input_error_before_any_job(tmp_path, sample_photo, small_request,
                                                                       capsys):
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    rc = main(["generate", sample_photo, "-o", "/proc/orbitmesh.glb", *_cli_args(tmp_path, small_request)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error: cannot write /proc/orbitmesh.glb" in err and "fix: choose an output path" in err
    assert "Traceback" not in err
    assert not (tmp_path / "jobs").exists()  # refused before the job folder (and any model)


@pytest.mark.parametrize("failure", ["access", "probe"])
def test_read_only_output_folder_is_refused(tmp_path, failure, monkeypatch):
    folder = tmp_path / "readonly"
    folder.mkdir()
    if failure == "access":  # what a non-root user sees on a folder without write permission
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real_access(p, mode))
        expected = f"the folder {folder} is not writable"
    else:  # a read-only file system: access says yes, creating a file fails
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(generate_module.tempfile, "TemporaryFile", read_only)
        expected = f"cannot create files in {folder} (Read-only file system)"
    with pytest.raises(InputError) as err:
        check_output(str(folder / "sub" / "out.glb"))  # a missing folder: checked where it would be created
    assert expected in err.value.message and str(folder / "sub" / "out.glb") in err.value.message
    assert "folder you can write to" in err.value.fix
    assert not (folder / "sub").exists()


def test_output_path_shapes_are_refused(tmp_path):
    (tmp_path / "dir.glb").mkdir()
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "pipe.glb")
    cases = {tmp_path / "dir.glb": "is a folder", tmp_path / "pipe.glb": "exists and is not a regular file",
             tmp_path / "file" / "out.glb": f"{tmp_path / 'file'} is a file, not a folder",
             tmp_path / "out.txt": "must be a .glb file"}
    for path, expected in cases.items():
        with pytest.raises(InputError) as err:
            check_output(str(path))
        assert expected in err.value.message, (path, err.value.message)
    check_output(str(tmp_path / "new" / "deeper" / "out.glb"))  # missing folders are fine (created at export)
    check_output(str(tmp_path / "out.glb"))
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "dir.glb", "file", "pipe.glb"]  # the probe left nothing behind


def test_disk_full_at_the_final_copy_is_a_clear_error_that_says_where_the_glb_is(tmp_path, sample_photo,
                                                                                 small_request, monkeypatch, capsys):
    from orbitmesh.pipeline import output

    out = tmp_path / "copy" / "out.glb"
    real_copyfile = output.shutil.copyfile

    def disk_full(src, dst, *args, **kwargs):  # only the copy to -o (preprocess copies the input the same way)
        if Path(dst).parent == out.parent:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copyfile(src, dst, *args, **kwargs)

    monkeypatch.setattr(output.shutil, "copyfile", disk_full)
    rc = main(["generate", sample_photo, "-o", str(out), "--quiet", *_cli_args(tmp_path, small_request)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and f"error: could not write {out}: No space left on device" in err
    (job_dir,) = (tmp_path / "jobs").iterdir()
    job = JobFolder.open(job_dir)
    glb = job_dir / "model.glb"
    assert f"the finished GLB is in the job folder: {glb}" in err
    assert job.status == "failed" and job.record["error"]["stage"] == "export"
    assert job.record["error"]["glb_path"] == str(glb) and "traceback" not in job.record["error"]
    assert "model.glb" in job.record["artefacts"] and glb.stat().st_size > 0  # listed and there
    assert not out.exists() and list(out.parent.iterdir()) == []  # no partial copy, no temp file


def test_a_full_disk_elsewhere_does_not_claim_a_glb(tmp_path, sample_photo, small_request, cpu_settings,
                                                    monkeypatch):
    from orbitmesh.pipeline import output

    def disk_full(self, ctx):
        raise OSError(errno.ENOSPC, "No space left on device", str(ctx.job.artefact("model.glb")))

    monkeypatch.setattr(output.MeshStage, "run", disk_full)
    with pytest.raises(OrbitMeshError, match="No space left on device") as err:
        generate(GenerateRequest(image_path=sample_photo, **small_request), settings=cpu_settings(tmp_path))
    assert "finished GLB" not in err.value.message
    (record,) = _job_records(tmp_path / "jobs")
    assert record["status"] == "failed" and record["error"]["stage"] == "mesh"
    assert record["error"]["glb_path"] is None and "model.glb" not in record["artefacts"]


# ----- the input image ---------------------------------------------------------------------------------------

def test_input_that_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "broken.png").symlink_to(tmp_path / "gone.png")
    cases = {tmp_path / "folder.png": "is a folder", tmp_path / "pipe.png": "is a named pipe (FIFO)",
             tmp_path / "missing.png": "image not found", tmp_path / "broken.png": "(a broken symbolic link)"}
    if Path("/dev/zero").exists():
        cases[Path("/dev/zero")] = "is a device"
    for path, expected in cases.items():
        with pytest.raises(InputError) as err:
            GenerateRequest(image_path=str(path)).validate_source()
        assert expected in err.value.message and str(path) in err.value.message, err.value.message
        assert err.value.fix
        if expected.startswith("is a"):
            assert err.value.message.startswith("not a regular file")
    with pytest.raises(InputError, match="must be a file path"):
        GenerateRequest(image_path=3).validate_source()  # never os.stat(3): that is a file descriptor


def test_cli_with_a_fifo_as_input_does_not_block(tmp_path, small_request, run_orbitmesh):
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)
    proc = run_orbitmesh("generate", str(fifo), *_cli_args(tmp_path, small_request), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"error: not a regular file: {fifo} is a named pipe (FIFO)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "jobs").exists()


# ----- torch-free front door ---------------------------------------------------------------------------------

def test_version_and_doctor_without_torch(tmp_path, run_python, monkeypatch):
    import orbitmesh

    monkeypatch.setenv("ORBITMESH_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("ORBITMESH_MODEL_DIR", str(tmp_path / "models"))
    code = ("import sys\nfrom orbitmesh.cli import main\ntry:\n    rc = main(sys.argv[1:] or ['--version'])\n"
            "except SystemExit as exc:\n    rc = exc.code\nprint('rc', rc, 'torch' in sys.modules and "
            "sys.modules['torch'] is not None)")
    version = run_python(code, without=("torch",))
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines() == [f"orbitmesh {orbitmesh.__version__}", "rc 0 False"]
    doctor = run_python(code.replace("sys.argv[1:] or ['--version']", "['doctor']"), without=("torch",))
    assert doctor.returncode == 0 and "Traceback" not in doctor.stderr, doctor.stderr
    lines = doctor.stdout.splitlines()
    assert lines[-1] == "rc 0 False"
    assert any(line.split() == ["torch", "MISSING"] for line in lines), doctor.stdout
    assert "torch missing" in doctor.stdout and "pip install" in doctor.stdout
