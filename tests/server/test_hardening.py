"""Regression tests of the hardening issue: each reproduces one way the server broke and checks what it does now.

The runners here are stand-ins for the pipeline (they write a small file and report progress): these tests are
about the worker, the HTTP layer and the job folders, not the model. Disk errors are injected at the write points
(tests may run as root, where chmod cannot make a folder read-only).
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from orbitmesh import atomic
from orbitmesh.jobs import JobFolder
from orbitmesh.pipeline.request import GenerateResult
from orbitmesh.server.app import ServerConfig, make_server
from orbitmesh.server.limits import JobLimits
from orbitmesh.server.retention import Retention


def writing_runner(seen: list | None = None, before_return=None, steps: int = 1, step_s: float = 0.0):
    """A stand-in pipeline: reports ``steps`` progress steps (each may be cancelled), writes model.glb into its own
    job folder under output_dir, calls ``before_return()``, returns the result."""
    def run(request, settings, tracker):
        for step in range(steps):
            tracker("lrm", step, steps, "working")
            time.sleep(step_s)
        job = JobFolder.create(settings.output_dir, "run")
        glb = job.write_bytes("model.glb", b"glTF-stand-in")
        job.update(status="done")
        if seen is not None:
            seen.append(settings.output_dir.parent.name)
        if before_return is not None:
            before_return()
        return GenerateResult(job_dir=job.path, glb_path=glb, request=request, model="stand-in")

    return run


@pytest.fixture
def image(png_bytes) -> bytes:
    return png_bytes(Image.new("RGB", (32, 32), (200, 30, 30)))


def submit(http_request, url: str, settings: dict | None = None, *, prompt: str = "a chair",
           headers: dict | None = None) -> tuple[int, dict]:
    body = json.dumps({"prompt": prompt, **(settings or {})}).encode()
    status, data, _ = http_request(url, "POST", "/jobs", {"Content-Type": "application/json", **(headers or {})},
                                   body)
    return status, data


def wait(http_request, url: str, job_id: str, until=("done", "failed", "cancelled"), timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job, _ = http_request(url, "GET", f"/jobs/{job_id}")
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {until}: {job}")


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/secret/job.json")


# ----- 1. the worker survives anything; /health reports it ------------------------------------------------------

def test_worker_survives_a_job_folder_it_cannot_write(tmp_path, cpu_settings, start_server, http_request,
                                                      monkeypatch):
    real_write = atomic.write_json
    state = {"full": False}
    monkeypatch.setattr(atomic, "write_json",
                        lambda *a, **k: disk_full() if state["full"] else real_write(*a, **k))

    def fill_disk():
        state["full"] = True  # the disk fills while the job runs: its final record cannot be written

    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=writing_runner(before_return=fill_disk))
    try:
        status, job = submit(http_request, server.url)
        first = wait(http_request, server.url, job["id"])
        assert first["status"] == "failed" and "no space left" in first["error"]["message"]
        assert "free disk space" in first["error"]["fix"]
        assert "/somewhere" not in json.dumps(first)  # no server path in the API
        status, health, _ = http_request(server.url, "GET", "/health")
        assert health["worker"]["alive"] and health["worker"]["unsaved_records"] == 1
        state["full"] = False
        server.manager.runner = writing_runner()
        status, job = submit(http_request, server.url)  # the worker still takes jobs
        assert wait(http_request, server.url, job["id"])["status"] == "done"
        record = json.loads((server.manager.root / first["id"] / "job.json").read_text())
        assert record["status"] == "failed"  # the lagging record was written once the disk allowed it
        status, health, _ = http_request(server.url, "GET", "/health")
        assert health["status"] == "ok" and health["worker"] == {
            "alive": True, "state": "idle", "job": None, "jobs": [], "workers": 1, "restarts": 0,
            "unsaved_records": 0}
    finally:
        server.close()


def test_worker_survives_base_exceptions_and_a_dead_thread_is_restarted(tmp_path, cpu_settings, start_server,
                                                                        http_request):
    def exits(request, settings, tracker):
        raise SystemExit(3)  # not an Exception: it used to end the worker thread

    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=exits)
    try:
        status, job = submit(http_request, server.url)
        failed = wait(http_request, server.url, job["id"])
        assert failed["status"] == "failed" and "SystemExit" in failed["error"]["message"]
        server.manager.runner = writing_runner()
        status, job = submit(http_request, server.url)
        assert wait(http_request, server.url, job["id"])["status"] == "done"
        # Second line: a worker thread that died anyway is restarted by the next health check or submission.
        manager = server.manager
        with manager._cond:
            manager._stopping = True
            manager._cond.notify_all()
        for worker in manager._workers:
            worker.join(5)
        manager._stopping = False
        status, health, _ = http_request(server.url, "GET", "/health")
        assert health["worker"]["alive"] and health["worker"]["restarts"] == 1
        status, job = submit(http_request, server.url)
        assert wait(http_request, server.url, job["id"])["status"] == "done"
    finally:
        server.close()


# ----- 6. disk errors at submission: 507, nothing left behind ---------------------------------------------------

def test_a_full_or_read_only_jobs_folder_is_507_and_leaves_no_folder(tmp_path, cpu_settings, start_server,
                                                                     http_request, image, monkeypatch):
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=writing_runner())
    root = server.manager.root
    try:
        for code in (errno.ENOSPC, errno.EROFS, errno.EACCES):
            def fail(*_a, code=code, **_k):
                raise OSError(code, "injected", str(root / "x" / "upload.png"))

            monkeypatch.setattr(atomic, "write_bytes", fail)
            body = (b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"c.png\"\r\n\r\n" + image
                    + b"\r\n--B--\r\n")
            status, err, _ = http_request(server.url, "POST", "/jobs",
                                          {"Content-Type": "multipart/form-data; boundary=B"}, body)
            assert status == 507 and err["error"] == "insufficient_storage", err
            assert str(root) not in json.dumps(err) and err["fix"]
            assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []  # no empty job folder
        monkeypatch.undo()
        # The free-space check asks for what the job needs (tens of MB), not a fixed gigabyte.
        import shutil

        monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**12, 10**12, 5 << 20))
        status, err = submit(http_request, server.url)
        assert status == 507 and "needs about" in err["message"] and "--keep-jobs" in err["fix"]
        monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**12, 10**12, 200 << 20))
        status, job = submit(http_request, server.url)
        assert status == 202
    finally:
        server.close()


# ----- 3. clients name catalogue models or models in the model folder ------------------------------------------

def test_clients_cannot_name_server_paths_or_start_hub_downloads(tmp_path, cpu_settings, start_server,
                                                                 http_request):
    settings = cpu_settings(tmp_path)
    server = start_server(settings, ServerConfig(port=0), runner=writing_runner())
    try:
        for model in ("/etc/passwd", "~", "../models", "someone/some-model", str(settings.model_dir)):
            status, err = submit(http_request, server.url, {"model": model})
            assert (status, err["error"]) == (400, "model_unavailable"), (model, err)
            assert "--allow-model-paths" in err["fix"] and str(tmp_path) not in json.dumps(err)
        status, err = submit(http_request, server.url, {"text_to_image_model": "someone/some-model"})
        assert (status, err["error"]) == (400, "model_unavailable")
        # Same answer whether or not the path exists: no file-existence oracle.
        answers = {json.dumps(submit(http_request, server.url, {"model": m})[1])
                   for m in ("/etc/passwd", "/etc/no-such-file")}
        assert len({a.replace("no-such-file", "passwd") for a in answers}) == 1
        status, job = submit(http_request, server.url, {"model": "tiny-random"})
        assert status == 202
    finally:
        server.close()
    # A model folder inside the model folder may be named by its folder name; an operator may allow paths.
    (settings.model_dir / "my-finetune").mkdir(parents=True)
    (settings.model_dir / "my-finetune" / "model.safetensors").write_bytes(b"x")
    server = start_server(settings, ServerConfig(port=0), runner=writing_runner(), jobs_root=tmp_path / "jobs2")
    try:
        status, job = submit(http_request, server.url, {"model": "my-finetune"})
        assert status == 202, job
    finally:
        server.close()
    server = start_server(settings, ServerConfig(port=0, allow_model_paths=True), runner=writing_runner(),
                          jobs_root=tmp_path / "jobs3")
    try:
        status, job = submit(http_request, server.url, {"model": str(settings.model_dir / "my-finetune")})
        assert status == 202, job
    finally:
        server.close()


# ----- 4 and 10. caps, memory estimate, modes the machine cannot run --------------------------------------------

def test_server_caps_and_memory_estimate_refuse_heavy_jobs_before_they_start(tmp_path, cpu_settings, start_server,
                                                                            http_request):
    limits = JobLimits(max_mc_resolution=256, max_texture_size=1024, max_faces=50_000)
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0, limits=limits), runner=writing_runner())
    try:
        for key, value, flag in (("mc_resolution", 512, "--max-mc-resolution"),
                                 ("texture_size", 2048, "--max-texture-size"),
                                 ("target_faces", 100_000, "--max-faces")):
            status, err = submit(http_request, server.url, {key: value})
            assert (status, err["error"]) == (400, "invalid_settings") and key in err["message"]
            assert flag in err["fix"]
        status, err = submit(http_request, server.url, {"mode": "quality"})  # no SV3D here: refused at once
        assert status == 400 and "quality" in err["message"].lower() + err["fix"].lower()
        status, health, _ = http_request(server.url, "GET", "/health")
        assert health["limits"]["max_mc_resolution"] == 256 and health["modes"] == ["fast"]
        assert list(server.manager.root.glob("2*")) == []
    finally:
        server.close()
    tight = replace(limits, max_memory_gb=1.0)  # the base of any job is over this budget
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0, limits=tight), runner=writing_runner(),
                          jobs_root=tmp_path / "jobs2")
    try:
        status, err = submit(http_request, server.url, {"mc_resolution": 128})
        assert (status, err["error"]) == (400, "too_much_memory") and "mc_resolution" in err["fix"]
    finally:
        server.close()


# ----- 8. nothing lost on a stop: the running job stays queued ---------------------------------------------------

def test_a_stop_leaves_the_running_and_queued_jobs_queued_for_the_next_start(tmp_path, cpu_settings, start_server,
                                                                            http_request):
    settings = cpu_settings(tmp_path)
    server = start_server(settings, ServerConfig(port=0), runner=writing_runner(steps=400, step_s=0.01))
    ids = [submit(http_request, server.url, prompt=f"thing {i}")[1]["id"] for i in range(3)]
    wait(http_request, server.url, ids[0], until=("running",))
    server.close()  # SIGTERM/Ctrl-C in `orbitmesh serve` end here
    records = [json.loads((tmp_path / "jobs" / job_id / "job.json").read_text()) for job_id in ids]
    assert [r["status"] for r in records] == ["queued"] * 3
    assert "the server stopped" in records[0]["message"] and records[0]["attempts"] == 0  # not "cancelled"
    inner = list((tmp_path / "jobs" / ids[0] / "run").glob("*/job.json"))
    assert all(json.loads(p.read_text())["status"] != "running" for p in inner)
    seen: list = []
    server = start_server(settings, ServerConfig(port=0), runner=writing_runner(seen))
    try:
        for job_id in ids:
            assert wait(http_request, server.url, job_id)["status"] == "done"
        assert seen == ids  # in their order; same ids and URLs
    finally:
        server.close()


def test_retention_removes_the_oldest_finished_jobs(tmp_path, cpu_settings, start_server, http_request):
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0, retention=Retention(keep_jobs=2)),
                          runner=writing_runner())
    try:
        ids = []
        for i in range(4):
            status, job = submit(http_request, server.url, prompt=f"thing {i}")
            ids.append(job["id"])
            wait(http_request, server.url, job["id"])
        time.sleep(0.2)  # pruning follows each job
        status, listing, _ = http_request(server.url, "GET", "/jobs")
        assert sorted(j["id"] for j in listing["jobs"]) == sorted(ids[2:])
        left = sorted(p.name for p in server.manager.root.iterdir() if not p.name.startswith("."))
        assert left == sorted(ids[2:])
        # --max-disk-gb: oldest finished first until the folder fits (1e-6 GB = 1000 bytes); unfinished jobs count
        # towards the total but are never removed.
        finished = [("b", 2.0, 600), ("a", 1.0, 600)]
        assert Retention(max_disk_gb=1e-6).to_remove(finished, 1200) == ["a"]
        assert Retention(max_disk_gb=0.5e-6).to_remove(finished, 1200) == ["a", "b"]
        assert Retention(max_disk_gb=1e-6).to_remove(finished, 5000) == ["a", "b"]
        assert Retention(keep_jobs=1, max_disk_gb=1e-3).to_remove(finished, 1200) == ["a"]
        assert Retention(max_disk_gb=1e-3).to_remove(finished, 1200) == []
    finally:
        server.close()


# ----- 2 and 10. origins, hosts, targets; connection limits -----------------------------------------------------

def raw(url: str, data: bytes, timeout: float = 10) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and b"}" in out:
                break
    return out


def test_web_pages_and_forged_requests_cannot_drive_the_server(tmp_path, cpu_settings, start_server, http_request,
                                                               image):
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=writing_runner())
    try:
        body = (b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"c.png\"\r\n\r\n" + image
                + b"\r\n--B--\r\n")
        form = {"Content-Type": "multipart/form-data; boundary=B"}
        for origin in ("null", "https://evil.example", "http://127.0.0.1.evil.example"):
            status, err, _ = http_request(server.url, "POST", "/jobs", {**form, "Origin": origin}, body)
            assert (status, err["error"]) == (403, "forbidden_origin"), origin
        status, job, _ = http_request(server.url, "POST", "/jobs", {**form, "Origin": "http://127.0.0.1:1"}, body)
        assert status == 202  # the OpenAPI page on the server itself (a loopback origin)
        status, err, _ = http_request(server.url, "POST", f"/jobs/{job['id']}/cancel", {"Origin": "null"})
        assert (status, err["error"]) == (403, "forbidden_origin")
        two_hosts = raw(server.url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
        assert two_hosts.startswith(b"HTTP/1.1 403") and b"forbidden_host" in two_hosts
        absolute = raw(server.url, b"GET http://evil.example/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert absolute.startswith(b"HTTP/1.1 400") and b"origin-form" in absolute
        assert list(server.manager.root.glob("2*")) == [server.manager.root / job["id"]]
    finally:
        server.close()


def test_slow_and_surplus_connections_are_dropped(tmp_path, cpu_settings, start_server, http_request):
    config = ServerConfig(port=0, header_timeout_s=0.5, max_connections=4)
    server = start_server(cpu_settings(tmp_path), config, runner=writing_runner())
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    try:
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
        idle[0].sendall(b"GET /hea")  # slowloris: a request that never ends
        surplus = socket.create_connection((host, int(port)), timeout=10)
        answer = surplus.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
        for sock in idle:  # closed by the server after header_timeout_s, not held forever
            assert sock.recv(100) == b""
            sock.close()
        status, health, _ = http_request(server.url, "GET", "/health")
        assert status == 200 and health["status"] == "ok"
    finally:
        server.close()


# ----- 7. nesting and huge numbers; --max-upload-mb inf ----------------------------------------------------------

def test_deep_nesting_and_huge_numbers_are_400(tmp_path, cpu_settings, start_server, http_request):
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=writing_runner())
    try:
        for body in (b'{"prompt": "x", "seed": ' + b"[" * 1000 + b"]" * 1000 + b"}",
                     b"[" * 1000 + b"]" * 1000,
                     b'{"prompt": "x", "seed": ' + b"9" * 5001 + b"}",
                     b'{"prompt": "x", "seed": 1e999}'):
            status, err, _ = http_request(server.url, "POST", "/jobs", {"Content-Type": "application/json"}, body)
            assert status == 400 and err["error"] in ("invalid_json", "invalid_settings"), (body[:40], err)
        status, health, _ = http_request(server.url, "GET", "/health")
        assert health["status"] == "ok"
    finally:
        server.close()


def test_serve_refuses_infinite_or_silly_numbers(run_orbitmesh, tmp_path):
    for args in (["--max-upload-mb", "inf"], ["--max-upload-mb", "nan"], ["--max-disk-gb", "-1"],
                 ["--max-connections", "0"], ["--keep-jobs", "-2"]):
        proc = run_orbitmesh("serve", "--port", "0", "--output-dir", str(tmp_path / "jobs"), *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and args[0] in proc.stderr, proc.stderr


def test_openapi_page_and_schema_are_served(tmp_path, cpu_settings, start_server, http_request):
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=writing_runner())
    try:
        status, schema, _ = http_request(server.url, "GET", "/openapi.json")
        assert status == 200 and {"/health", "/jobs", "/jobs/{job_id}/events"} <= set(schema["paths"])
        status, page, resp = http_request(server.url, "GET", "/docs")
        assert status == 200 and b"swagger" in page.lower()
    finally:
        server.close()


def test_make_server_binds_before_touching_the_jobs_folder(tmp_path, cpu_settings):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        from orbitmesh.errors import InputError

        with pytest.raises(InputError, match="cannot listen"):
            make_server(cpu_settings(tmp_path), ServerConfig(port=taken.getsockname()[1]))
        assert not Path(tmp_path / "jobs").exists()
    finally:
        taken.close()


def test_event_streams_do_not_hold_threads(tmp_path, cpu_settings, start_server, http_request):
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=writing_runner(steps=50, step_s=0.02))
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    try:
        status, job = submit(http_request, server.url)
        before = threading.active_count()
        streams = []
        for _ in range(30):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(f"GET /jobs/{job['id']}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            streams.append(sock)
        assert streams[-1].recv(4096).startswith(b"HTTP/1.1 200")
        assert threading.active_count() - before < 5  # coroutines, not a thread per stream
        assert wait(http_request, server.url, job["id"])["status"] == "done"
        for sock in streams:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
                if b'"status": "done"' in data:
                    break
            assert b'"status": "done"' in data
            sock.close()
    finally:
        server.close()
