"""The add-on's models: the bpy-free core (blender_addon/core/models.py) listing, downloading with progress,
cancelling, resuming and removing models through both backends, and the Models box and the panel's model menu
drawn with headless Blender (bpy 5.0.1) against Blender's real UI API.

Only real components: the OrbitMesh server (in this process, so that the catalogue's IS-Net entry can point
at a local file server, as tests/models/test_model_manager.py does), `orbitmesh models ...` child processes
(the In-Blender path; their hub is a local stand-in through HF_ENDPOINT, as a mirror would be), the installed
add-on zip in headless Blender. The file server holds a download after its first MiB until the test releases
it, so progress and cancel are observed mid-transfer without timing assumptions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from blender_addon.core import backends, client, models
from orbitmesh.models import catalogue, manager

ISNET = "isnet-general-use"
HALF = 1 << 20  # a held response stops after this many bytes (the fetchers read 1 MiB chunks)
DATA = bytes(range(256)) * 6144  # 1.5 MiB: one chunk, then the held rest
CONFIG = b"model: triposr\n"
HELPERS = Path(__file__).with_name("blender_helpers.py")


# ----- a local file server: Range, a hub API stand-in, a response held mid-way -----------------------------

class FileServer:
    """Files with HTTP Range and JSON answers (a hub's API). While held (``hold()`` or ``GET /hold``) a file
    response with more than HALF bytes left sends HALF of them and waits for ``release()`` (or ``GET
    /release``, so another process can drive it); ``log`` records (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.json: dict[str, object] = {}
        self.log: list[tuple[str, str | None]] = []
        self.gate = threading.Event()
        self.gate.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.log.append((path, self.headers.get("Range")))
                if path in ("/hold", "/release"):
                    (server.gate.clear if path == "/hold" else server.gate.set)()
                    self._send(200, b"{}")
                elif path in server.json:
                    self._send(200, json.dumps(server.json[path]).encode())
                elif path in server.files:
                    self._file(server.files[path])
                else:
                    self.send_error(404)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, data: bytes) -> None:
                start = int((self.headers.get("Range") or "bytes=0-").removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                try:
                    if len(body) > HALF and not server.gate.is_set():
                        # The downloader throttles its progress events to one per 0.2 s: a pause before the
                        # first chunk makes sure that chunk's event goes out before the hold.
                        time.sleep(0.5)
                        self.wfile.write(body[:HALF])
                        self.wfile.flush()
                        server.gate.wait(120)
                        body = body[HALF:]
                    self.wfile.write(body)
                except OSError:  # the downloader went away (cancelled, terminated)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def until(predicate, what: str, timeout: float = 60.0):
    """Poll ``predicate`` until it returns something true (a deadline only against hangs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def files(tmp_path, monkeypatch, no_user_hub_cache):
    """The file server, this process's and the children's environment kept off this machine's caches, proxies
    and token; plenty of (pretend) free space in this process."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "HF_HUB_OFFLINE", "PYTHONPATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setattr(manager, "free_bytes", lambda path: 1 << 50)
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def orbitmesh_server(tmp_path, files, monkeypatch):
    """A real OrbitMesh server in this process, its catalogue's IS-Net pointed at the file server."""
    from orbitmesh.server.app import ServerConfig, make_server
    from orbitmesh.settings import Settings

    files.files["/isnet-general-use.onnx"] = DATA
    entry = catalogue.CATALOGUE[ISNET]
    source = replace(entry.source, url=files.url + "/isnet-general-use.onnx", md5=hashlib.md5(DATA).hexdigest())
    monkeypatch.setitem(catalogue.CATALOGUE, ISNET, replace(entry, source=source))
    settings = Settings(model_dir=tmp_path / "server-models", output_dir=tmp_path / "jobs", device="cpu")
    api = make_server(settings, ServerConfig(port=0))
    threading.Thread(target=api.serve_forever, daemon=True).start()
    yield api, settings
    api.close()


def rows_by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows}


# ----- the core against the server ----------------------------------------------------------------------------


def test_url_paths_keep_the_slash_of_hub_ids():
    assert client.model_url_path("stabilityai/sdxl-turbo", "download") == "/models/stabilityai/sdxl-turbo/download"
    assert client.model_url_path("my model?", "remove") == "/models/my%20model%3F/remove"
    assert models.child_argv(types.SimpleNamespace(python="py", model_dir="/m"), "list", "--json") == \
        ["py", "-m", "orbitmesh", "models", "list", "--json", "--model-dir", "/m"]


def test_server_lists_downloads_with_progress_cancels_resumes_and_removes(orbitmesh_server, files):
    api, settings = orbitmesh_server
    backend = backends.ServerBackend(api.url)
    rows = rows_by_name(models.list_models(backend))
    assert {r["kind"] for r in rows.values()} == set(models.KIND_LABELS)  # every kind, background removal too
    isnet = rows[ISNET]
    assert isnet["available"] is False and isnet["downloadable"] and models.status_text(isnet) == "not downloaded"
    assert models.licence_text(rows["vfusion3d"]) == "CC-BY-NC 4.0, commercial use: no"
    assert models.licence_text(rows["stabilityai/sdxl-turbo"]).endswith("commercial use: conditional")
    assert models.size_text(isnet["size_gb"]) == "180 MB" and models.size_text(rows["triposr"]["size_gb"]) == \
        "1.68 GB"

    # A download held after its first MiB: progress shows mid-way; Cancel stops it, keeping the partial data.
    view = models.ModelsView()
    files.hold()
    handle = models.start_download(backend, ISNET)
    view.start(handle)
    state = until(lambda: (s := handle.poll()).done_bytes >= HALF and s, "the first MiB")
    assert state.status == "running" and 0.0 < state.progress < 1.0
    assert models.status_text(isnet, view.state_of(ISNET)).startswith("downloading ")
    handle.cancel()
    assert "cancelling" in models.status_text(isnet, handle.poll())
    job = f"{api.url}/jobs/{handle.job_id}"
    until(lambda: json.load(urllib.request.urlopen(job))["cancel_requested"], "the server to take the cancel")
    files.release()
    final = handle.wait(60)
    assert final.status == "cancelled" and "resumes" in final.message and not final.error
    assert [s.status for s in view.collect()] == ["cancelled"] and not view.active
    assert view.state_of(ISNET).status == "cancelled"  # the box's note until the next download
    isnet = rows_by_name(models.list_models(backend))[ISNET]
    assert isnet["partial_bytes"] >= HALF and models.status_text(isnet).startswith("partial (")

    # Download again: it resumes (Range) and ends available.
    final = models.start_download(backend, ISNET).wait(60)
    assert final.status == "done" and final.result["status"] == "downloaded" and final.progress == 1.0, final
    assert ("/isnet-general-use.onnx", f"bytes={isnet['partial_bytes']}-") in files.log
    isnet = rows_by_name(models.list_models(backend))[ISNET]
    assert isnet["available"] and isnet["managed"] and models.status_text(isnet) == "available"
    assert (settings.model_dir / ISNET / f"{ISNET}.onnx").read_bytes() == DATA

    removed = models.remove_model(backend, ISNET)
    assert removed == {"name": ISNET, "removed": True, "freed_bytes": removed["freed_bytes"]}
    assert removed["freed_bytes"] >= len(DATA)
    assert not rows_by_name(models.list_models(backend))[ISNET]["available"]
    # A hub id with a slash reaches its route; nothing of it is here.
    assert models.remove_model(backend, "stabilityai/sd-turbo") == {"name": "stabilityai/sd-turbo", "removed": False,
                                                                    "freed_bytes": 0}
    with pytest.raises(models.AddonError) as err:  # the server's refusal, with its fix
        models.start_download(backend, "no-such-model")
    assert "no model 'no-such-model'" in err.value.message and err.value.fix


# ----- the core with a child process (In Blender) ---------------------------------------------------------------


def hub_stand_in(files: FileServer) -> None:
    """TripoSR on a hub stand-in (HF_ENDPOINT): its API answer and its two files."""
    files.json["/api/models/stabilityai/TripoSR"] = {
        "id": "stabilityai/TripoSR", "sha": "c0ffee", "siblings": [
            {"rfilename": "model.ckpt", "size": len(DATA), "blobId": "x",
             "lfs": {"sha256": hashlib.sha256(DATA).hexdigest(), "size": len(DATA), "pointerSize": 130}},
            {"rfilename": "config.yaml", "size": len(CONFIG), "blobId": git_sha1(CONFIG)}]}
    files.files["/stabilityai/TripoSR/resolve/c0ffee/model.ckpt"] = DATA
    files.files["/stabilityai/TripoSR/resolve/c0ffee/config.yaml"] = CONFIG


def test_child_downloads_with_jsonl_progress_sigterm_keeps_the_partial_and_resume_and_remove(tmp_path, files):
    hub_stand_in(files)
    model_dir = tmp_path / "models"
    backend = backends.SubprocessBackend(sys.executable, [], model_dir=str(model_dir),
                                         extra_env={"HF_ENDPOINT": files.url})
    rows = rows_by_name(models.list_models(backend))  # `orbitmesh models list --json` in a child
    assert rows["triposr"]["available"] is False and rows["orbitmesh-preview"]["available"]
    assert rows[ISNET]["kind"] == "background_removal"

    files.hold()
    handle = models.start_download(backend, "triposr", log_path=tmp_path / "models.log")
    state = until(lambda: (s := handle.poll()).done_bytes >= HALF and s, "the child's first MiB")
    assert state.status == "running" and state.total_bytes == len(DATA) + len(CONFIG)
    assert 0.0 < state.progress < 1.0 and state.file == "model.ckpt"
    handle.cancel()  # SIGTERM to the child
    final = handle.wait(60)
    files.release()
    assert final.status == "cancelled" and "partial download is kept" in final.message
    assert handle.returncode == 143  # the CLI stopped cleanly on SIGTERM (128 + 15), not killed
    assert "terminated: the partial download is kept" in (tmp_path / "models.log").read_text()
    triposr = rows_by_name(models.list_models(backend))["triposr"]
    assert triposr["partial_bytes"] >= HALF and not triposr["available"]
    assert not (model_dir / "triposr").exists()

    final = models.start_download(backend, "triposr", log_path=tmp_path / "models.log").wait(60)
    assert final.status == "done" and final.result["status"] == "downloaded", final
    assert ("/stabilityai/TripoSR/resolve/c0ffee/model.ckpt", f"bytes={triposr['partial_bytes']}-") in files.log
    assert (model_dir / "triposr" / "model.ckpt").read_bytes() == DATA
    assert rows_by_name(models.list_models(backend))["triposr"]["available"]

    removed = models.remove_model(backend, "triposr")  # `orbitmesh models remove triposr --yes --json`
    assert removed["removed"] is True and removed["freed_bytes"] >= len(DATA)
    assert not (model_dir / "triposr").exists()
    with pytest.raises(models.AddonError) as err:  # the bundled preview model: the CLI's error and fix
        models.remove_model(backend, "orbitmesh-preview")
    assert "bundled" in err.value.message and "--model orbitmesh-preview" in err.value.fix


def test_cli_download_sigterm_and_licence_without_yes(tmp_path, files):
    """`orbitmesh models download` without --progress stops cleanly on SIGTERM too (exit 143, partial kept); with
    --progress jsonl and no --yes nothing is asked on stdout: a failed event says to pass --yes."""
    hub_stand_in(files)
    env = dict(os.environ, HF_ENDPOINT=files.url)
    argv = [sys.executable, "-m", "orbitmesh", "models", "download", "triposr", "--model-dir", str(tmp_path / "m")]
    done = subprocess.run(argv + ["--progress", "jsonl"], env=env, capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 2 and [e["event"] for e in events] == ["failed"]
    assert "--yes" in events[0]["fix"] and events[0]["name"] == "triposr"
    assert "MIT" in done.stderr  # the licence notice goes to stderr, never into the JSON lines

    files.hold()
    proc = subprocess.Popen(argv + ["--yes"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until(lambda: manager.partial_bytes("triposr", tmp_path / "m") >= HALF, "the first MiB on disk")
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    files.release()
    assert proc.returncode == 143 and "terminated: the partial download is kept" in err, err
    assert manager.partial_bytes("triposr", tmp_path / "m") >= HALF


def test_child_download_failure_reaches_the_box_state(tmp_path, files):
    backend = backends.SubprocessBackend(sys.executable, [], model_dir=str(tmp_path / "models"),
                                         extra_env={"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"})
    view = models.ModelsView()
    view.start(models.start_download(backend, "vfusion3d", log_path=tmp_path / "models.log"))
    final = view.downloads["vfusion3d"].wait(60)
    assert [s.name for s in view.collect()] == ["vfusion3d"]
    state = view.state_of("vfusion3d")
    assert state is not None and state.status == "failed" and final.status == "failed"
    assert "cannot reach the Hugging Face hub" in state.error["message"]
    assert "HF_ENDPOINT" in state.error["fix"]
    assert models.status_text({"name": "vfusion3d", "available": False}, state) == "not downloaded"


def test_menu_order_and_the_model_a_job_uses():
    rows = [{"name": "vfusion3d", "kind": "lrm", "available": False, "commercial": "no"},
            {"name": "triposr", "kind": "lrm", "available": True, "commercial": "yes"},
            {"name": "isnet-general-use", "kind": "background_removal", "available": True},
            {"name": "orbitmesh-preview", "kind": "lrm", "available": True, "commercial": "yes"}]
    assert [r["name"] for r in models.menu_rows(rows, "lrm")] == ["triposr", "orbitmesh-preview", "vfusion3d"]
    assert models.job_model("", rows, "triposr") == ("triposr", "backend default")
    assert models.job_model("vfusion3d", rows, "triposr")[1].startswith("not downloaded")
    assert "refused under Commercial use only" in models.job_model("vfusion3d", rows, "", commercial_only=True)[1]
    assert models.job_model("my/hub-model", rows, "triposr") == ("my/hub-model", "")
    assert models.job_model("", rows, "")[0] == ""


# ----- the Models box and the model menu in headless Blender -----------------------------------------------------

SCENARIO = r'''
import json, sys, time, types, urllib.request
import bpy  # first (see blender_helpers.py)

sys.path.insert(0, sys.argv[1])
from blender_helpers import ADDON, RecordingLayout, call_op, install

zip_path, server_url, files_url, model_dir, out_path = sys.argv[2:7]
out = {"install": install(zip_path)}
models = sys.modules[ADDON + ".core.models"]
prefs_mod = sys.modules[ADDON + ".preferences"]
prefs = prefs_mod.get_prefs(bpy.context)
st = bpy.context.window_manager.orbitmesh_state


def draw_prefs():
    calls = []
    prefs_mod.draw_models_box(RecordingLayout(calls), prefs)
    return calls


def draw(cls):
    calls = []
    cls.draw(types.SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
    return calls


def job():
    handle = models.VIEW.downloads["isnet-general-use"]
    with urllib.request.urlopen(f"{server_url}/jobs/{handle.job_id}") as resp:
        return json.load(resp)


try:
    prefs.backend, prefs.server_url = "SERVER", server_url
    out["before"] = draw_prefs()
    out["refresh_status"] = call_op(bpy.ops.orbitmesh.refresh_status, wait=True)
    out["default_model"] = st.default_model
    out["health_box"] = draw_prefs()  # before any list: the rows of the health check
    out["refresh"] = call_op(bpy.ops.orbitmesh.models_refresh, wait=True)
    out["listed"] = draw_prefs()
    out["panel"] = draw(bpy.types.VIEW3D_PT_orbitmesh)
    out["menu"] = draw(bpy.types.ORBITMESH_MT_models)

    # A download held mid-way by the file server: the box shows its progress and a Cancel button.
    urllib.request.urlopen(files_url + "/hold").read()
    handle = models.start_download(prefs_mod.make_backend(prefs), "isnet-general-use")
    models.VIEW.start(handle)  # what the Download button does (it then returns; a timer follows)
    deadline = time.time() + 60
    while handle.poll().done_bytes < 1 << 20 and time.time() < deadline:
        time.sleep(0.02)
    out["downloading"] = draw_prefs()
    out["cancel"] = call_op(bpy.ops.orbitmesh.model_cancel, model="isnet-general-use")
    while not job()["cancel_requested"] and time.time() < deadline:
        time.sleep(0.02)
    urllib.request.urlopen(files_url + "/release").read()
    handle.wait(60)
    # The timer the Download button starts: it collects the ended download and lists the models again.
    out["watch_again"] = sys.modules[ADDON + ".ops_models"]._watch_downloads()
    out["cancelled"] = draw_prefs()

    out["download"] = call_op(bpy.ops.orbitmesh.model_download, model="isnet-general-use", wait=True)
    out["downloaded"] = draw_prefs()
    out["remove"] = call_op(bpy.ops.orbitmesh.model_remove, model="isnet-general-use", wait=True)
    out["removed"] = draw_prefs()

    out["use_model"] = call_op(bpy.ops.orbitmesh.use_model, value="vfusion3d")
    out["panel_chosen"] = draw(bpy.types.VIEW3D_PT_orbitmesh)
    prefs.commercial_only = True
    out["panel_commercial"] = draw(bpy.types.VIEW3D_PT_orbitmesh)
    prefs.commercial_only = False
    bpy.context.scene.orbitmesh.model = ""

    # In Blender: the list and the download run in `orbitmesh models` child processes; this one fails fast
    # (its hub is a closed port) and its message and fix reach the box.
    prefs.backend, prefs.model_dir = "INPROCESS", model_dir
    out["inb_refresh"] = call_op(bpy.ops.orbitmesh.models_refresh, wait=True)
    out["inb_download"] = call_op(bpy.ops.orbitmesh.model_download, model="triposr", wait=True)
    out["inb_failed"] = draw_prefs()
    out["inb_menu"] = draw(bpy.types.ORBITMESH_MT_models)
    out["menu_registered"] = hasattr(bpy.types, "ORBITMESH_MT_models")
    out["disable"] = call_op(bpy.ops.preferences.addon_disable, module=ADDON)
except Exception:
    import traceback
    out["fatal"] = traceback.format_exc()
with open(out_path, "w") as fh:
    json.dump(out, fh, default=str)
'''


def labels(calls: list) -> list[str]:
    return [kw.get("text", "") for name, kw in calls if name == "label"]


def operators(calls: list) -> list[tuple[str, str]]:
    return [(kw["operator"], kw.get("text", "")) for name, kw in calls if name == "operator"]


@pytest.fixture(scope="module")
def client_zip(build, tmp_path_factory) -> Path:
    return build.build_client(tmp_path_factory.mktemp("dist")).path


@pytest.mark.blender
def test_models_box_and_menu_drawn_with_the_real_ui_api(tmp_path, files, orbitmesh_server, client_zip):
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("bpy is not installed (pip install bpy==5.0.1)")
    api, _settings = orbitmesh_server
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(SCENARIO))
    out_path = tmp_path / "out.json"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"), OMP_NUM_THREADS="1",
               HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    proc = subprocess.run([sys.executable, str(script), str(HELPERS.parent), str(client_zip), api.url, files.url,
                           str(tmp_path / "inb-models"), str(out_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert out_path.is_file(), f"the Blender session wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    out = json.loads(out_path.read_text())
    assert "fatal" not in out, out["fatal"] + proc.stderr[-3000:]
    assert out["install"]["enabled"]

    assert "No models listed yet: press Refresh" in labels(out["before"])
    health_box = labels(out["health_box"])  # the health check's rows, before any list
    assert "From the last backend check: Refresh for partial downloads and Remove" in health_box
    assert "isnet-general-use" in health_box

    # The box: each kind's heading, then every model's name, licence + commercial use, size, status, buttons.
    listed = labels(out["listed"])
    heads = [t for t in listed if t in models.KIND_LABELS.values()]
    assert heads == list(models.KIND_LABELS.values())
    i = listed.index("triposr")
    assert listed[i:i + 4] == ["triposr", "MIT, commercial use: yes", "1.68 GB", "not downloaded"]
    i = listed.index("isnet-general-use")
    assert listed[i:i + 4] == ["isnet-general-use", "Apache-2.0, commercial use: yes", "180 MB", "not downloaded"]
    assert listed[listed.index("vfusion3d (default)") + 1] == "CC-BY-NC 4.0, commercial use: no"
    assert listed[listed.index("orbitmesh-preview") + 3] == "available"
    assert ("orbitmesh.model_download", "Download") in operators(out["listed"])
    assert ("orbitmesh.model_remove", "") not in operators(out["listed"])  # nothing the manager placed yet
    assert ("orbitmesh.models_refresh", "") in operators(out["listed"])

    # Mid-download: a progress bar "downloading NN% (...)" and a Cancel button; then "partial" and Resume.
    bars = [kw for name, kw in out["downloading"] if name == "progress"]
    assert len(bars) == 1 and bars[0]["factor"] == pytest.approx(HALF / len(DATA), abs=1e-3)
    assert bars[0]["text"] == "downloading 67% (1.0 MB of 1.6 MB)"
    assert "1 downloading" in labels(out["downloading"])
    assert ("orbitmesh.model_cancel", "") in operators(out["downloading"])
    assert out["cancel"]["result"] == ["FINISHED"] and out["watch_again"] is None  # nothing left to follow
    cancelled = labels(out["cancelled"])
    assert cancelled[cancelled.index("isnet-general-use") + 3].startswith("partial (")
    assert "isnet-general-use: cancelled: the partial download is kept and resumes next time" in cancelled
    assert ("orbitmesh.model_download", "Resume") in operators(out["cancelled"])
    assert ("orbitmesh.model_remove", "") in operators(out["cancelled"])  # a partial download can be removed

    assert out["download"]["result"] == ["FINISHED"], out["download"]["error"]
    done = labels(out["downloaded"])
    assert done[done.index("isnet-general-use") + 3] == "available"
    assert ("orbitmesh.model_remove", "") in operators(out["downloaded"])
    assert out["remove"]["result"] == ["FINISHED"], out["remove"]["error"]
    removed = labels(out["removed"])
    assert removed[removed.index("isnet-general-use") + 3] == "not downloaded"
    assert any(t.startswith("isnet-general-use: removed (") for t in removed)

    # The panel: the model field with its menu, and the model a job will use.
    panel = out["panel"]
    assert ("menu", {"menu": "ORBITMESH_MT_models", "text": "", "icon": "DOWNARROW_HLT"}) in \
        [(n, kw) for n, kw in panel]
    assert out["menu_registered"]
    default = out["default_model"]
    assert default and f"A job will use: {default} (backend default)" in labels(panel)
    # The menu: the backend default, the available reconstruction models, then those not downloaded;
    # never a background-removal (or other kind's) model.
    menu = [text for op, text in operators(out["menu"]) if op == "orbitmesh.use_model"]
    assert menu[0] == f"Backend Default ({default})"
    assert menu[1:] == ["tiny-random", "orbitmesh-preview", "vfusion3d (1.80 GB)", "triposr (1.68 GB)"]
    assert "Not downloaded (Preferences > Add-ons > OrbitMesh > Models)" in labels(out["menu"])
    assert out["use_model"]["result"] == ["FINISHED"]
    assert "A job will use: vfusion3d (not downloaded: Download it under Models in the add-on preferences)" in \
        labels(out["panel_chosen"])
    assert any("non-commercial: refused under Commercial use only" in t for t in labels(out["panel_commercial"]))

    # In Blender: listed by a child; the failed download's message and fix in the box and the report.
    assert out["inb_refresh"]["result"] == ["FINISHED"], out["inb_refresh"]["error"]
    assert out["inb_download"]["result"] is None
    assert "cannot reach the Hugging Face hub" in out["inb_download"]["error"]
    failed = labels(out["inb_failed"])
    assert any(t.startswith("triposr: download failed: cannot reach the Hugging Face hub") for t in failed)
    assert any(t.startswith("Fix: ") and "HF_ENDPOINT" in t for t in failed)
    assert not any(t.startswith("isnet-general-use: removed") for t in failed)  # the server's, not this folder's
    inb_menu = [text for op, text in operators(out["inb_menu"]) if op == "orbitmesh.use_model"]
    assert inb_menu[1:3] == ["tiny-random", "orbitmesh-preview"] and ISNET not in " ".join(inb_menu)
    assert out["disable"]["result"] == ["FINISHED"]
