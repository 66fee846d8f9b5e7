"""`orbitmesh serve` end to end: the real server on port 0 running the real pipeline (tiny-random).

One server for the module (the pipeline's imports and the tiny model are paid once);
jobs use small settings so each takes a few seconds on a 2-core CPU.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid

import pytest

from orbitmesh.server.app import ServerConfig

UPLOAD_LIMIT = 1 << 20


def multipart(fields: dict[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for name, (filename, data) in fields.items():
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Api:
    """The HTTP API of one server, with the settings and image a job gets unless told otherwise."""

    def __init__(self, url: str, http_request, settings: dict, image: bytes) -> None:
        self.url, self.http_request, self.settings, self.image = url, http_request, settings, image
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        headers = {"Content-Type": content_type} if content_type else {}
        return self.http_request(self.url, method, path, headers, body)

    def submit(self, settings: dict | None = None, image: bytes | None = None, filename="chair.png") -> str:
        body, ctype = multipart({"image": (filename, image or self.image),
                                 "settings": (None, json.dumps(settings or self.settings).encode())})
        status, data, _ = self.call("POST", "/jobs", body, ctype)
        assert status == 202 and data["status"] == "queued", data
        return data["id"]

    def job(self, job_id: str) -> dict:
        status, data, _ = self.call("GET", f"/jobs/{job_id}")
        assert status == 200, data
        return data

    def wait(self, job_id: str, statuses=("done", "failed", "cancelled"), timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")

    def events(self, job_id: str, on_event=None) -> tuple[list[dict], int]:
        """Read the whole event stream: (job objects, keep-alive comments)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=180)
        conn.request("GET", f"/jobs/{job_id}/events")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
        events, keepalives = [], 0
        for line in resp:
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
                if on_event:
                    on_event(events[-1])
            elif line.startswith(b":"):
                keepalives += 1
        conn.close()
        return events, keepalives


@pytest.fixture(scope="module")
def server(tmp_path_factory, cpu_settings, start_server):
    settings = cpu_settings(tmp_path_factory.mktemp("server"))
    srv = start_server(settings, ServerConfig(port=0, max_upload_bytes=UPLOAD_LIMIT, keepalive_s=0.3))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def upload(object_image, png_bytes) -> bytes:
    """The PNG a job uploads: an object on white that preprocessing can cut out."""
    return png_bytes(object_image())


@pytest.fixture
def api(server, http_request, small_request, upload) -> Api:
    return Api(server.url, http_request, {**small_request, "seed": 1}, upload)


def test_health(api):
    status, health, _ = api.call("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["version"] == "0.1.0"
    assert health["device"]["device"] == "cpu"
    names = {m["name"]: m for m in health["models"]}
    assert names["tiny-random"]["available"] is True
    assert all({"name", "kind", "available", "licence"} <= set(m) for m in health["models"])
    assert "fast" in health["modes"]
    assert isinstance(health["queue_length"], int) and isinstance(health["busy"], bool)


def test_concurrent_submissions_queue_and_all_finish(api, server):
    n = 3
    barrier = threading.Barrier(n)
    ids: list[str] = []

    def submit(i: int) -> None:
        barrier.wait()
        ids.append(api.submit({**api.settings, "seed": i}))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(ids)) == n
    # The last-queued job's stream sits idle while the others run: it must get keep-alives.
    last = max(ids, key=lambda i: api.job(i)["created"])
    events, keepalives = api.events(last)
    assert keepalives >= 1 and events[0]["status"] == "queued" and events[-1]["status"] == "done"
    jobs = [api.wait(i) for i in ids]
    assert [j["status"] for j in jobs] == ["done"] * n, [j["error"] for j in jobs]
    # One worker, FIFO: runs do not overlap and start in submission order.
    by_start = sorted(jobs, key=lambda j: j["started"])
    assert [j["id"] for j in by_start] == [j["id"] for j in sorted(jobs, key=lambda j: j["created"])]
    for a, b in zip(by_start, by_start[1:]):
        assert a["finished"] <= b["started"]
    for job in jobs:
        assert job["progress"] == 1.0 and job["error"] is None and "model.glb" in job["files"]
        assert job["result"]["glb"] == "model.glb" and "/" not in json.dumps(job["result"]["request"])
        status, glb, resp = api.call("GET", f"/jobs/{job['id']}/files/model.glb")
        assert status == 200 and glb[:4] == b"glTF" and resp.getheader("Content-Type") == "model/gltf-binary"
        assert int.from_bytes(glb[8:12], "little") == len(glb)  # GLB header length field
    status, listing, _ = api.call("GET", "/jobs")
    listed = [j["id"] for j in listing["jobs"]]
    assert set(ids) <= set(listed)
    created = [j["created"] for j in listing["jobs"]]
    assert created == sorted(created, reverse=True)  # newest first


def test_events_stream_reports_progress_until_done(api):
    job_id = api.submit()
    events, _ = api.events(job_id)
    assert events[-1]["status"] == "done" and events[-1]["progress"] == 1.0 and events[-1]["stage"] is None
    running = [e for e in events if e["status"] == "running"]
    assert running and any(e["stage"] and e["total"] > 0 for e in running)
    stages = [e["stage"] for e in running if e["stage"]]
    assert "preprocess" in stages and len(set(stages)) >= 3
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and all(0 <= p <= 1 for p in progress)
    assert set(events[-1]) >= {"id", "status", "stage", "step", "total", "message", "eta_s", "progress", "error",
                               "settings", "files", "created", "started", "finished", "result"}
    assert events[-1]["settings"]["texture_size"] == api.settings["texture_size"]
    assert events[-1]["settings"]["model"] == "tiny-random"


def test_bad_uploads_get_json_4xx_and_the_server_keeps_serving(api, server):
    before = sorted(p.name for p in server.manager.root.iterdir())
    png = api.image
    cases = [
        (*multipart({"image": ("chair.png", b"this is not an image")}), 400, "invalid_image"),
        (*multipart({"image": ("chair.png", png[: len(png) // 2])}), 400, "invalid_image"),  # truncated
        (*multipart({"image": ("chair.png", b"")}), 400, "empty_upload"),
        (*multipart({"image": ("big.png", b"\x89PNG" + b"\0" * (UPLOAD_LIMIT + 10))}), 413, "payload_too_large"),
        (*multipart({"file": ("chair.png", png)}), 400, "unknown_field"),
        (*multipart({"settings": (None, b"{}")}), 400, "missing_field"),
        (*multipart({"image": ("../../etc/passwd", png)}), 400, "unsafe_filename"),
        (*multipart({"image": ("..\\..\\win.ini", png)}), 400, "unsafe_filename"),
        (*multipart({"image": ("c.png", png), "settings": (None, b'{"image_path": "/etc/passwd"}')}), 400,
         "invalid_settings"),
        (*multipart({"image": ("c.png", png), "settings": (None, b'{"seed": NaN}')}), 400, "invalid_settings"),
        (*multipart({"image": ("c.png", png), "settings": (None, b'{"texture_size": 99999}')}), 400,
         "invalid_settings"),
        (*multipart({"image": ("c.png", png), "settings": (None, b"[1, 2]")}), 400, "invalid_json"),
        (*multipart({"image": ("c.png", png), "settings": (None, b'{"model": "no-such-model"}')}), 400,
         "model_unavailable"),
        (b"--x\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc", "multipart/form-data; boundary=x",
         400, "malformed_multipart"),
        (png, "image/png", 415, "unsupported_media_type"),
        (json.dumps({"seed": 1}).encode(), "application/json", 400, "invalid_settings"),
        (json.dumps({"prompt": "   "}).encode(), "application/json", 400, "invalid_settings"),
        (b"{not json", "application/json", 400, "invalid_json"),
    ]
    for body, ctype, want_status, want_code in cases:
        status, data, _ = api.call("POST", "/jobs", body, ctype)
        assert (status, data["error"]) == (want_status, want_code), (want_code, data)
        assert data["message"] and data["fix"]
    assert sorted(p.name for p in server.manager.root.iterdir()) == before  # nothing was queued
    status, health, _ = api.call("GET", "/health")
    assert status == 200 and health["status"] == "ok"


def test_file_access_is_limited_to_the_jobs_own_files(api):
    job_id = api.submit()
    job = api.wait(job_id)
    assert job["status"] == "done" and {"model.glb", "upload.png"} <= set(job["files"])
    status, data, resp = api.call("GET", f"/jobs/{job_id}/files/upload.png")
    assert status == 200 and data[:8] == b"\x89PNG\r\n\x1a\n" and resp.getheader("Content-Type") == "image/png"
    for path in (f"/jobs/{job_id}/files/job.json", f"/jobs/{job_id}/files/../../../../etc/passwd",
                 f"/jobs/{job_id}/files/..%2F..%2Fjob.json", f"/jobs/{job_id}/files/%2e%2e",
                 f"/jobs/{job_id}/files/%2Fetc%2Fpasswd", f"/jobs/{job_id}/files/run",
                 f"/jobs/..%2F{job_id}/files/model.glb", "/jobs/../etc/passwd", f"/jobs/{job_id}/files/.job.json",
                 f"/jobs/{job_id}/files/model.glb%00.png"):
        status, data, _ = api.call("GET", path)
        assert status in (400, 404) and data["error"] in ("not_found", "unsafe_path"), path


def test_client_disconnect_loses_no_job(api, server):
    body, ctype = multipart({"image": ("gone.png", api.image),
                             "settings": (None, json.dumps(api.settings).encode())})
    before = {j["id"] for j in api.call("GET", "/jobs")[1]["jobs"]}
    sock = socket.create_connection((api.host, api.port))
    sock.sendall(f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    sock.close()  # hang up without reading the answer
    deadline = time.monotonic() + 30
    new: set[str] = set()
    while not new and time.monotonic() < deadline:
        new = {j["id"] for j in api.call("GET", "/jobs")[1]["jobs"]} - before
        time.sleep(0.05)
    assert len(new) == 1
    job_id = new.pop()
    # Drop an event stream mid-job as well: the job must still finish.
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    conn.request("GET", f"/jobs/{job_id}/events")
    assert conn.getresponse().readline().startswith(b"data: ")
    conn.close()
    job = api.wait(job_id)
    assert job["status"] == "done" and "model.glb" in job["files"]


def test_cancel_queued_and_running_jobs(api, server):
    running_id = api.submit({**api.settings, "mc_resolution": 128})
    # The queued one is a prompt job (JSON body); cancelled before it runs, it never needs a text-to-image model.
    status, data, _ = api.call("POST", "/jobs", json.dumps({"prompt": "a wooden chair", **api.settings}).encode(),
                               "application/json")
    assert status == 202 and data["status"] == "queued"
    queued_id = data["id"]
    status, queued, _ = api.call("POST", f"/jobs/{queued_id}/cancel")
    assert status == 200 and queued["status"] == "cancelled"  # at once
    assert queued["settings"]["prompt"] == "a wooden chair" and queued["files"] == []
    assert api.job(queued_id)["status"] == "cancelled"
    assert not (server.manager.root / queued_id / "run").exists()  # it never ran

    cancelled = threading.Event()

    def cancel_when_running(event: dict) -> None:
        if event["status"] == "running" and event["stage"] and not cancelled.is_set():
            cancelled.set()
            status, job, _ = api.call("POST", f"/jobs/{running_id}/cancel")
            assert status == 200 and job["status"] == "running" and job["cancel_requested"] is True

    events, _ = api.events(running_id, cancel_when_running)
    assert cancelled.is_set() and events[-1]["status"] == "cancelled"
    job = api.wait(running_id)
    assert job["status"] == "cancelled" and "model.glb" not in job["files"]
    assert not list((server.manager.root / running_id).rglob("*.glb"))
    for job_id in (queued_id, running_id):
        status, err, _ = api.call("POST", f"/jobs/{job_id}/cancel")
        assert status == 409 and err["error"] == "already_finished"
    # The worker moves on after a cancel.
    assert api.wait(api.submit())["status"] == "done"
