"""Server parts that need no pipeline: the multipart parser, bind/token/path checks, restart recovery."""

from __future__ import annotations

import io
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
from orbitmesh.server.multipart import parse_form, read_body
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


def test_multipart_parses_fields_and_keeps_binary_data_exact():
    data = bytes(range(256)) * 3 + b"\r\n--XyZ-not-a-delimiter\r\n"
    parts = parse_form(b"preamble\r\n" + form(field("image", data, "a b.png"), field("settings", b"{}")), CT,
                       allowed=("image", "settings"))
    assert parts["image"].data == data and parts["image"].filename == "a b.png"
    assert parts["settings"].data == b"{}" and parts["settings"].filename is None


@pytest.mark.parametrize("body, content_type, code", [
    (form(field("image", b"x"), close=False), CT, "malformed_multipart"),  # truncated: no closing delimiter
    (form(field("file", b"x")), CT, "unknown_field"),
    (form(field("image", b"x"), field("image", b"y")), CT, "duplicate_field"),
    (form(b"Content-Type: text/plain\r\n\r\nx"), CT, "malformed_multipart"),  # no Content-Disposition
    (form(field("image", b"x")), "multipart/form-data", "malformed_multipart"),  # no boundary
    (b"garbage without delimiters", CT, "malformed_multipart"),
])
def test_multipart_rejects_malformed_bodies(body, content_type, code):
    with pytest.raises(ApiError) as err:
        parse_form(body, content_type, allowed=("image", "settings"))
    assert err.value.status == 400 and err.value.code == code and err.value.fix


def test_read_body_enforces_the_limit_before_reading():
    stream = io.BytesIO(b"a" * 100)
    with pytest.raises(ApiError) as err:
        read_body(stream, {"Content-Length": "100"}, limit=50)
    assert err.value.status == 413 and "limit" in err.value.message
    with pytest.raises(ApiError) as err:
        read_body(io.BytesIO(b"abc"), {"Content-Length": "10"}, limit=50)  # body shorter than announced
    assert err.value.status == 400
    with pytest.raises(ApiError) as err:
        read_body(io.BytesIO(b"abc"), {"Transfer-Encoding": "chunked"}, limit=50)
    assert err.value.status == 411
    assert read_body(io.BytesIO(b"abcdef"), {"Content-Length": "4"}, limit=50) == b"abcd"


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


def test_restart_lists_old_jobs_and_fails_interrupted_ones(tmp_path, make, http_request):
    root = tmp_path / "jobs"
    running = JobFolder.create(root, "chair", settings={"seed": 1})
    running.update(server=True, status="running", started=1.0)
    queued = JobFolder.create(root, "lamp")
    queued.update(server=True)
    done = JobFolder.create(root, "cli job")  # written by `orbitmesh generate`: listed as it is
    done.write_bytes("model.glb", b"glTF")
    done.update(status="done")
    (root / "not-a-job").mkdir()
    server = make()
    status, listing, _ = http_request(server.url, "GET", "/jobs")
    by_id = {j["id"]: j for j in listing["jobs"]}
    assert status == 200 and set(by_id) == {running.id, queued.id, done.id}
    for job in (running, queued):
        assert by_id[job.id]["status"] == "failed"
        assert by_id[job.id]["error"]["message"] == "server stopped before the job finished"
        assert json.loads((job.path / "job.json").read_text())["status"] == "failed"  # persisted
    assert by_id[done.id]["status"] == "done" and by_id[done.id]["files"] == ["model.glb"]
    status, data, _ = http_request(server.url, "GET", f"/jobs/{done.id}/files/model.glb")
    assert status == 200 and data == b"glTF"
    status, err, _ = http_request(server.url, "POST", f"/jobs/{running.id}/cancel")
    assert status == 409 and err["error"] == "already_finished"
    status, err, _ = http_request(server.url, "GET", "/jobs/no-such-job")
    assert status == 404 and set(err) == {"error", "message", "fix"}


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
        make_server(settings, ServerConfig(port=server.server_address[1]), runner=never_run)
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
