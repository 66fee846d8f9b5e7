"""The add-on's bpy-free parts: HTTP client errors, multipart encoding, the subprocess job
protocol (with small stand-in CLIs: real child processes that speak the JSON-lines protocol),
and the persisted job list. No Blender needed."""

from __future__ import annotations

import email.parser
import json
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blender_addon import backends, client, jobs  # noqa: E402


def test_normalize_url():
    assert client.normalize_url("127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert client.normalize_url("http://localhost:9000") == "http://localhost:9000"
    for bad in ("", "ftp://host", "http://host:notaport"):
        with pytest.raises(client.ServerError) as info:
            client.normalize_url(bad)
        assert info.value.fix and info.value.code == "bad_url"


def test_unreachable_server_says_how_to_fix():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(client.ServerUnreachable) as info:
        client.Client(f"http://127.0.0.1:{port}", timeout=2).health()
    assert f"127.0.0.1:{port}" in info.value.message and "orbitmesh serve" in info.value.fix
    with pytest.raises(backends.BackendError) as info:
        backends.ServerBackend(f"http://127.0.0.1:{port}").health(timeout=2)
    assert "cannot reach" in info.value.message


def test_multipart_body_parses_back():
    image = bytes(range(256)) * 10
    body, ctype = client.encode_multipart({"settings": json.dumps({"seed": 5})},
                                          {"image": ('my "chair".png', image, "image/png")})
    msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    parts = {p.get_param("name", header="content-disposition"): p for p in msg.get_payload()}
    assert json.loads(parts["settings"].get_payload(decode=True)) == {"seed": 5}
    assert parts["image"].get_payload(decode=True) == image
    assert parts["image"].get_filename() == "my _chair_.png"


def fake_cli(tmp_path: Path, body: str) -> list[str]:
    """argv of a stand-in for `orbitmesh generate --progress jsonl` (the real one runs in the Blender tests)."""
    script = tmp_path / "fake_generate.py"
    script.write_text("import json, os, sys, time\n"
                      "def emit(**o):\n    print(json.dumps(o), flush=True)\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def spec(tmp_path: Path) -> backends.JobSpec:
    return backends.JobSpec(name="chair", work_dir=tmp_path / "work", image_path=str(tmp_path / "in.png"))


def test_subprocess_job_follows_progress_to_done(tmp_path):
    argv = fake_cli(tmp_path, """
        job = os.path.join(os.getcwd(), "20260101-chair-1")
        os.makedirs(job)
        json.dump({"status": "running", "stages": ["a", "b"]}, open(os.path.join(job, "job.json"), "w"))
        emit(event="progress", stage="a", step=1, total=2, message="half", eta_s=1.0)
        print("some library chatter")
        emit(event="progress", stage="b", step=1, total=2, message="b half", eta_s=0.5)
        open(os.path.join(job, "model.glb"), "wb").write(b"glTF")
        json.dump({"status": "done", "versions": {"orbitmesh": "9.9"}}, open(os.path.join(job, "job.json"), "w"))
        emit(event="done", result={"job_dir": job, "glb_path": os.path.join(job, "model.glb"), "model": "m"})
    """)
    handle = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path))
    state = handle.wait(30)
    assert state.status == "done" and state.progress == 1.0
    assert state.glb_path.endswith("model.glb") and Path(state.glb_path).is_file()
    assert state.version == "9.9" and state.result["model"] == "m"
    assert "some library chatter" in (tmp_path / "work" / "generate.log").read_text()


def test_subprocess_job_overall_progress_uses_stage_list(tmp_path):
    argv = fake_cli(tmp_path, """
        job = os.path.join(os.getcwd(), "j")
        os.makedirs(job)
        json.dump({"status": "running", "stages": ["a", "b", "c", "d"]}, open(os.path.join(job, "job.json"), "w"))
        emit(event="progress", stage="c", step=1, total=2, message="", eta_s=None)
        time.sleep(30)
    """)
    handle = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path))
    for _ in range(200):
        if handle.state().status == "running":
            break
        time.sleep(0.05)
    assert handle.state().progress == pytest.approx((2 + 0.5) / 4)
    handle.request_cancel()
    assert handle.wait(15).status == "cancelled"


def test_subprocess_job_error_event(tmp_path):
    argv = fake_cli(tmp_path, """
        emit(event="error", message="image not found: x.png", fix="check the path")
        sys.exit(2)
    """)
    state = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path)).wait(30)
    assert state.status == "failed"
    assert state.error == {"message": "image not found: x.png", "fix": "check the path"}


def test_subprocess_job_cancel_terminates_and_marks_job_folder(tmp_path):
    argv = fake_cli(tmp_path, """
        job = os.path.join(os.getcwd(), "20260101-chair-2")
        os.makedirs(job)
        json.dump({"status": "running", "stage": "02-lrm"}, open(os.path.join(job, "job.json"), "w"))
        emit(event="progress", stage="lrm", step=0, total=3, message="working", eta_s=None)
        time.sleep(60)
    """)
    handle = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path))
    for _ in range(200):
        if handle.state().status == "running":
            break
        time.sleep(0.05)
    handle.request_cancel()
    state = handle.wait(15)
    assert state.status == "cancelled" and handle.proc.poll() is not None
    record = json.loads((tmp_path / "work" / "20260101-chair-2" / "job.json").read_text())
    assert record["status"] == "cancelled" and record["error"]["message"] == "cancelled by the user"


def test_subprocess_job_unexpected_exit_is_a_clear_failure(tmp_path):
    argv = fake_cli(tmp_path, """
        sys.stderr.write("ImportError: no module named torch\\n")
        sys.exit(3)
    """)
    state = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path)).wait(30)
    assert state.status == "failed"
    assert "exit code 3" in state.error["message"] and "no module named torch" in state.error["message"]
    assert "generate.log" in state.error["fix"]


def test_subprocess_backend_argv_and_missing_python(tmp_path):
    backend = backends.SubprocessBackend(sys.executable, ["/opt/site"], model_dir="/models", device="cpu")
    s = backends.JobSpec(name="p", work_dir=tmp_path, prompt="a chair",
                         settings={"mode": "fast", "model": "", "seed": 4, "texture_size": 512})
    argv = backend.argv(s)
    assert argv[:5] == [sys.executable, "-m", "orbitmesh", "generate", "--prompt"] and argv[5] == "a chair"
    assert argv[argv.index("--seed") + 1] == "4" and "--model" not in argv  # empty model = default
    assert argv[argv.index("--progress") + 1] == "jsonl" and argv[argv.index("--output-dir") + 1] == str(tmp_path)
    assert argv[-4:] == ["--device", "cpu", "--model-dir", "/models"]
    assert backend.env()["PYTHONPATH"].split(":")[0] == "/opt/site"
    with pytest.raises(backends.BackendError) as info:
        backends.SubprocessBackend(str(tmp_path / "no-python"), [])
    assert "not found" in info.value.message and info.value.fix


def test_job_list_persists_and_marks_interrupted_jobs(tmp_path):
    path = tmp_path / "jobs.json"
    jl = jobs.JobList(path)
    done = jl.add(jobs.JobRecord(id="a", name="chair", backend="server", source_kind="image", status="done",
                                 settings={"seed": 1}))
    jl.add(jobs.JobRecord(id="b", name="lamp", backend="inprocess", source_kind="prompt", status="running"))
    again = jobs.JobList(path)
    assert [r.id for r in again.records] == ["b", "a"]
    assert again.get("a").settings == done.settings and again.get("a").status == "done"
    assert again.get("b").status == "failed" and "interrupted" in again.get("b").error["message"]
    again.clear_finished()
    assert jobs.JobList(path).records == []
    path.write_text("{not json")
    assert jobs.JobList(path).records == []  # a damaged list starts over instead of failing


def test_request_cancel_reaches_active_handles(tmp_path):
    class Handle:
        cancelled = False

        def request_cancel(self):
            self.cancelled = True

    a, b = Handle(), Handle()
    jobs.ACTIVE.update(a=a, b=b)
    try:
        assert jobs.request_cancel("b") == 1 and b.cancelled and not a.cancelled
        assert jobs.request_cancel() == 2 and a.cancelled
    finally:
        jobs.ACTIVE.clear()
