"""Server parts that need no pipeline: forms and body limits, bind/token/path checks, restart recovery."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from PIL import Image

from orbitmesh.errors import InputError
from orbitmesh.jobs import JobFolder
from orbitmesh.server import security
from orbitmesh.server.api_errors import ApiError
from orbitmesh.server.app import ServerConfig, make_server
from orbitmesh.server.uploads import validate_image

CT = "multipart/form-data; boundary=XyZ"


def form(*parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--XyZ\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--XyZ--\r\n" if close else b"")


def field(name: str, data: bytes, filename: str | None = None) -> bytes:
    disp = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return disp.encode() + b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data


@pytest.fixture
def png(png_bytes):
    """png(size=(32, 32)) -> a PNG of one colour."""
    return lambda size=(32, 32): png_bytes(Image.new("RGB", size, (200, 30, 30)))


def test_validate_image_decodes_and_rejects_bad_images(png, png_bytes):
    assert validate_image(png((40, 20))) == ("png", (40, 20))
    good = png((64, 64))
    for data, needle in ((b"", "empty"), (b"GIF89a-not-really", "not an image"), (good[: len(good) // 2], "decoded"),
                         (png((1, 1)), "1x1")):
        with pytest.raises(ApiError) as err:
            validate_image(data)
        assert err.value.status == 400 and needle in err.value.message
    # A 20000x20000 header is refused from the header alone (never allocated).
    big = png_bytes(Image.new("1", (20000, 20000)))
    with pytest.raises(ApiError, match="too large"):
        validate_image(big)


def test_bind_rules():
    for host in ("127.0.0.1", "localhost", "::1", "127.3.4.5"):
        security.check_bind(host, allow_remote=False, token=None)
    for host in ("0.0.0.0", "", "192.168.1.10", "::"):
        with pytest.raises(InputError, match="refusing"):
            security.check_bind(host, allow_remote=False, token=None)
    with pytest.raises(InputError, match="needs a token"):
        security.check_bind("0.0.0.0", allow_remote=True, token=None)
    with pytest.raises(InputError, match="too short"):
        security.check_bind("0.0.0.0", allow_remote=True, token="abc")
    security.check_bind("0.0.0.0", allow_remote=True, token="x" * 24)


def test_path_segments_refuse_traversal_in_any_encoding():
    assert security.path_segments("/jobs/abc/files/model.glb?x=1") == ["jobs", "abc", "files", "model.glb"]
    for raw in ("/jobs/../etc", "/jobs/%2e%2e/x", "/jobs/a/files/..%2Fjob.json", "/jobs/a/files/%2Fetc%2Fpasswd",
                "/jobs/a/files/a%5Cb", "/jobs/a/files/x%00.png", "/jobs/%ff"):
        with pytest.raises(ApiError) as err:
            security.path_segments(raw)
        assert err.value.status == 400, raw
    for name in (".hidden", "a..b", "job json", "x" * 200):
        with pytest.raises(ApiError):
            security.check_name(name, "file name")


def never_run(request, settings, tracker):  # these tests queue no job
    raise AssertionError("no job should run here")


@pytest.fixture
def make(tmp_path, cpu_settings, start_server):
    """make(**ServerConfig fields) -> a server on tmp_path's jobs folder that runs no job; closed afterwards."""
    servers = []

    def start(**config):
        server = start_server(cpu_settings(tmp_path), ServerConfig(port=0, **config), runner=never_run)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def recording_runner(seen: list):
    """A runner that records which job it ran (the job folder's name) and writes a one-line GLB."""
    def run(request, settings, tracker):
        from orbitmesh.jobs import JobFolder
        from orbitmesh.pipeline.request import GenerateResult

        seen.append(settings.output_dir.parent.name)
        tracker("lrm", 1, 1, "ran")
        job = JobFolder.create(settings.output_dir, "run")
        glb = job.write_bytes("model.glb", b"glTF")
        job.update(status="done")
        return GenerateResult(job_dir=job.path, glb_path=glb, request=request, model="recorded")

    return run


def test_restart_queues_unfinished_jobs_again_in_order(tmp_path, cpu_settings, start_server, http_request, png):
    root = tmp_path / "jobs"
    queued = JobFolder.create(root, "lamp", settings={"seed": 2, "prompt": "a lamp"})
    queued.update(server=True, created=2.0)
    running = JobFolder.create(root, "chair", settings={"seed": 1})
    running.write_bytes("upload.png", png())
    running.update(server=True, status="running", started=1.0, created=1.0, attempts=1, input="upload.png")
    (running.path / "run" / "partial").mkdir(parents=True)  # an interrupted attempt's files
    partial = JobFolder.create(running.path / "run", "chair")
    partial.update(status="running")
    twice = JobFolder.create(root, "vase", settings={"seed": 3, "prompt": "a vase"})
    twice.update(server=True, status="running", created=0.5, attempts=2)
    inner = JobFolder.create(twice.path / "run", "vase")
    inner.update(status="running")
    done = JobFolder.create(root, "cli job")  # written by `orbitmesh generate`: listed as it is
    done.write_bytes("model.glb", b"glTF")
    done.update(status="done")
    (root / "not-a-job").mkdir()
    seen: list = []
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=recording_runner(seen))
    try:
        try:  # terminal at once, before the job runs again (which then replaces the whole run/ folder)
            assert json.loads((partial.path / "job.json").read_text())["status"] == "failed"
        except FileNotFoundError:
            pass  # it already ran again
        jobs = {job_id: _wait_finished(http_request, server.url, job_id)
                for job_id in (running.id, queued.id, twice.id)}
        assert seen == [running.id, queued.id]  # the interrupted job first (it was older), then the queued one
        for job in (running, queued):
            assert jobs[job.id]["status"] == "done" and "model.glb" in jobs[job.id]["files"]
            assert json.loads((job.path / "job.json").read_text())["status"] == "done"  # persisted
        assert not (running.path / "run" / "partial").exists()  # the partial files were replaced
        assert jobs[twice.id]["status"] == "failed" and "interrupted twice" in jobs[twice.id]["error"]["message"]
        assert json.loads((inner.path / "job.json").read_text())["status"] == "failed"  # inner record too
        status, listing, _ = http_request(server.url, "GET", "/jobs")
        by_id = {j["id"]: j for j in listing["jobs"]}
        assert status == 200 and set(by_id) == {running.id, queued.id, done.id, twice.id}
        assert by_id[done.id]["status"] == "done" and by_id[done.id]["files"] == ["model.glb"]
        status, data, _ = http_request(server.url, "GET", f"/jobs/{done.id}/files/model.glb")
        assert status == 200 and data == b"glTF"
        status, err, _ = http_request(server.url, "POST", f"/jobs/{twice.id}/cancel")
        assert status == 409 and err["error"] == "already_finished"
        status, err, _ = http_request(server.url, "GET", "/jobs/no-such-job")
        assert status == 404 and set(err) == {"error", "message", "fix"}
    finally:
        server.close()


def _raw(url: str, request: bytes, timeout: float = 10) -> tuple[int, dict | bytes]:
    """Send raw bytes; read one answer (its headers, then Content-Length bytes or until the server closes)."""
    import socket

    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while (length is None or len(body) < int(length[1])) and (chunk := sock.recv(65536)):
            body += chunk
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if b"application/json" in head.lower() else body


@pytest.mark.parametrize("body, content_type, code", [
    (form(field("image", b"x"), close=False), CT, "malformed_multipart"),  # truncated: no closing delimiter
    (form(field("file", b"x", "a.png")), CT, "unknown_field"),
    (form(field("image", b"x", "a.png"), field("image", b"y", "b.png")), CT, "duplicate_field"),
    (form(field("settings", b"{}")), CT, "missing_field"),
    (form(field("image", b"x", "a.png")), "multipart/form-data", "malformed_multipart"),  # no boundary
    (b"garbage without delimiters", CT, "malformed_multipart"),
])
def test_malformed_forms_are_400_naming_the_problem(make, http_request, body, content_type, code):
    server = make()
    status, err, _ = http_request(server.url, "POST", "/jobs", {"Content-Type": content_type}, body)
    assert (status, err["error"]) == (400, code) and err["fix"]


def test_form_keeps_binary_data_exact_and_bodies_are_bounded(tmp_path, cpu_settings, start_server, http_request,
                                                              png):
    image = png((48, 40))
    seen: list = []
    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0, max_upload_bytes=4096),
                          runner=recording_runner(seen))
    try:
        body = form(field("image", image, "a b.png"), field("settings", b'{"seed": 7}'))
        status, job, _ = http_request(server.url, "POST", "/jobs", {"Content-Type": CT}, body)
        assert status == 202
        job = _wait_finished(http_request, server.url, job["id"])
        assert job["settings"]["seed"] == 7 and job["name"] == "a b"
        status, data, _ = http_request(server.url, "GET", f"/jobs/{job['id']}/files/upload.png")
        assert data == image  # byte for byte
        # Over the limit: 413 from Content-Length (the body is read and dropped, so the client gets the answer).
        big = form(field("image", b"\x89PNG" + b"\0" * 8000, "big.png"))
        status, err, _ = http_request(server.url, "POST", "/jobs", {"Content-Type": CT}, big)
        assert status == 413 and err["error"] == "payload_too_large" and "--max-upload-mb" in err["fix"]
        # Chunked (no Content-Length) is counted as it arrives.
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (big[:3000], big[3000:])) + b"0\r\n\r\n"
        status, err = _raw(server.url, b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + CT.encode()
                           + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        assert status == 413 and err["error"] == "payload_too_large"
        status, err = _raw(server.url, b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + CT.encode()
                           + b"\r\nContent-Length: 12x\r\n\r\nabc")
        assert status == 400  # h11 refuses a malformed Content-Length before the app
    finally:
        server.close()


def test_token_and_origin_checks(make, http_request):
    server = make(token="s3cret-token-0123456789")
    status, err, _ = http_request(server.url, "GET", "/jobs")
    assert status == 401 and err["error"] == "unauthorized" and "Bearer" in err["fix"]
    status, _, _ = http_request(server.url, "GET", "/jobs", {"Authorization": "Bearer wrong"})
    assert status == 401
    ok = {"Authorization": "Bearer s3cret-token-0123456789"}
    status, body, _ = http_request(server.url, "GET", "/jobs", ok)
    assert status == 200 and body == {"jobs": []}
    # A web page (foreign Origin) or a DNS-rebound Host name is refused even with the token.
    status, err, _ = http_request(server.url, "POST", "/jobs", {**ok, "Origin": "https://evil.example"}, b"{}")
    assert status == 403 and err["error"] == "forbidden_origin"
    status, err, _ = http_request(server.url, "GET", "/jobs", {**ok, "Host": "evil.example:8765"})
    assert status == 403 and err["error"] == "forbidden_host"
    status, err, _ = http_request(server.url, "GET", "/nope", ok)
    assert status == 404 and err["error"] == "not_found"
    status, err, _ = http_request(server.url, "DELETE", "/jobs", ok)
    assert status == 405


def _serve(*args: str, env_token: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ORBITMESH_TOKEN", None)
    if env_token:
        env["ORBITMESH_TOKEN"] = env_token
    return subprocess.Popen([sys.executable, "-m", "orbitmesh", "serve", "--quiet", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_refuses_non_loopback_without_allow_remote_and_token(tmp_path):
    out = ["--output-dir", str(tmp_path / "jobs"), "--port", "0"]
    proc = _serve("--host", "0.0.0.0", *out)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "refusing to listen on '0.0.0.0'" in err and "--allow-remote" in err
    proc = _serve("--host", "0.0.0.0", "--allow-remote", *out)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "needs a token" in err


def test_cli_port_0_prints_url_and_requires_the_token(tmp_path, http_request):
    token = "tok-" + "a1b2" * 6
    proc = _serve("--host", "0.0.0.0", "--allow-remote", "--port", "0", "--output-dir", str(tmp_path / "jobs"),
                  env_token=token)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("orbitmesh serve listening on "):
                break
        url = lines[-1].split()[-1]
        match = re.fullmatch(r"http://0\.0\.0\.0:(\d+)", url)
        assert match and int(match[1]) > 0, lines
        local = f"http://127.0.0.1:{match[1]}"
        status, err, _ = http_request(local, "GET", "/health")
        assert status == 401 and err["error"] == "unauthorized"
        status, health, _ = http_request(local, "GET", "/health", {"Authorization": f"Bearer {token}"})
        assert status == 200 and health["status"] == "ok" and health["queue_length"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_taken_port_or_jobs_folder_is_a_clear_error(tmp_path, make, cpu_settings, http_request):
    server = make()
    settings = cpu_settings(tmp_path)
    with pytest.raises(InputError, match="cannot listen") as err:
        make_server(settings, ServerConfig(port=server.socket.getsockname()[1]), runner=never_run)
    assert "--port" in err.value.fix
    # Another server on the same jobs folder would mark this one's running jobs failed: refused.
    with pytest.raises(InputError, match="another orbitmesh serve is using the jobs folder"):
        make_server(settings, ServerConfig(port=0), runner=never_run)
    status, _, _ = http_request(server.url, "GET", "/jobs")
    assert status == 200  # the first server is untouched


# ----- commercial use only: server-wide, or asked per job ------------------------------------------------------

def stop_run(seen: list):
    """A runner that records the settings each job runs with and ends it (failed) without loading anything."""
    from orbitmesh.errors import ModelError

    def run(request, settings, tracker):
        seen.append(settings)
        raise ModelError("stopped by the test")

    return run


def _json(body: dict) -> tuple[dict, bytes]:
    return {"Content-Type": "application/json"}, json.dumps(body).encode()


def _wait_finished(http_request, url: str, job_id: str) -> dict:
    import time

    for _ in range(200):
        status, job, _ = http_request(url, "GET", f"/jobs/{job_id}")
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.parametrize("server_wide", [False, True])
def test_commercial_only_refuses_before_any_job_and_reaches_the_run(tmp_path, cpu_settings, start_server,
                                                                    http_request, png, server_wide):
    from dataclasses import replace

    settings = replace(cpu_settings(tmp_path), commercial_only=server_wide)
    (settings.model_dir / "vfusion3d").mkdir(parents=True)  # VFusion3D only (stand-in files)
    (settings.model_dir / "vfusion3d" / "model.safetensors").write_bytes(b"x")
    seen: list = []
    server = start_server(settings, ServerConfig(port=0), runner=stop_run(seen))
    try:
        status, health, _ = http_request(server.url, "GET", "/health")
        assert health["commercial_only"] is server_wide
        assert health["default_model"] == (None if server_wide else "vfusion3d")
        rows = {r["name"]: r for r in health["models"]}
        assert (rows["vfusion3d"]["commercial"], rows["triposr"]["commercial"]) == ("no", "yes")
        # The client asks (or the server insists; a client's false cannot turn it off): 400, no job folder.
        for asked in (True, False) if server_wide else (True,):
            headers, body = _json({"prompt": "a chair", "model": "vfusion3d", "commercial_only": asked})
            status, err, _ = http_request(server.url, "POST", "/jobs", headers, body)
            assert status == 400 and err["error"] == "licence_refused" and "--model triposr" in err["fix"]
            multipart = form(field("image", png(), "chair.png"),
                             field("settings", json.dumps({"commercial_only": asked}).encode()))
            status, err, _ = http_request(server.url, "POST", "/jobs", {"Content-Type": CT}, multipart)
            assert status == 400 and err["error"] == "licence_refused", err  # model None: vfusion3d skipped
        assert [p for p in (tmp_path / "jobs").iterdir() if p.is_dir()] == []
        headers, body = _json({"prompt": "a chair", "commercial_only": "yes"})
        status, err, _ = http_request(server.url, "POST", "/jobs", headers, body)
        assert status == 400 and err["error"] == "invalid_settings" and "commercial_only" in err["message"]
        # An allowed model runs, and the run gets commercial_only (SDXL-Turbo's condition is then a warning).
        headers, body = _json({"prompt": "a chair", "model": "tiny-random", "commercial_only": True})
        status, job, _ = http_request(server.url, "POST", "/jobs", headers, body)
        assert status == 202
        finished = _wait_finished(http_request, server.url, job["id"])
        assert finished["commercial_only"] is True and seen[-1].commercial_only is True
        assert "commercial_only" not in finished["settings"]  # not a generate setting: regenerate stays valid
        if not server_wide:  # a job that does not ask runs without the check
            headers, body = _json({"prompt": "a chair", "model": "vfusion3d"})
            status, job, _ = http_request(server.url, "POST", "/jobs", headers, body)
            assert status == 202
            assert _wait_finished(http_request, server.url, job["id"])["commercial_only"] is False
            assert seen[-1].commercial_only is False
    finally:
        server.close()


def test_serve_ray_flags_are_checked_before_anything_starts(tmp_path):
    """--workers needs --ray; --ray without Ray installed names the install command (Ray blocked here)."""
    out = ["--output-dir", str(tmp_path / "jobs"), "--port", "0"]
    proc = _serve("--workers", "3", *out)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--workers above 1 needs --ray" in err and "--ray local" in err
    code = ("import sys; sys.modules['ray'] = None; from orbitmesh.cli import main; "
            f"sys.exit(main(['serve', '--ray', 'local', '--output-dir', {str(tmp_path / 'jobs')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and 'pip install "orbitmesh[ray]"' in proc.stderr, proc.stderr
    assert not (tmp_path / "jobs").exists()  # refused before the jobs folder
