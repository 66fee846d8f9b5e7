"""The model manager (`orbitmesh models ...`, orbitmesh.models.manager): every model listed with its licence;
downloads that ask for the licence, resume after an interruption (HTTP Range), verify every file and move it
into the catalogue's layout only when complete; install/remove/path; read-only folders and no network.

Transfers run against a real local HTTP server (tiny files, Range, a transfer cut mid-way, a hub API
stand-in for the real hub fetcher) or a fake hub fetcher object; nothing leaves this machine.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import socket
import struct
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orbitmesh.cli import main
from orbitmesh.errors import DiskError, JobCancelled, ModelError
from orbitmesh.models import catalogue, manager
from orbitmesh.models.fetchers import Listing, RemoteFile

REQUIRED_KEYS = {"name", "kind", "licence", "commercial", "size_gb", "source", "available", "path"}
ISNET = "isnet-general-use"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, no_user_hub_cache):
    """No real hub cache, rembg folder, token or proxy of this machine; plenty of (pretend) free space."""
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net-home"))
    monkeypatch.setenv("HF_TOKEN", "")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(manager, "free_bytes", lambda path: 1 << 50)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def safetensors_bytes(n_floats: int = 4) -> bytes:
    """A valid little .safetensors file: one float32 tensor."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack(f"<{n_floats}f", *range(n_floats))


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


# ----- a local HTTP server: files with Range, a cut transfer, a hub API stand-in ----------------------------

class LocalServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.json: dict[str, object] = {}
        self.status: dict[str, int] = {}
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)
        self.sent: list[int] = []  # body bytes sent per file response
        self.cut_after: int | None = None  # the next file response stops after this many body bytes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.log.append((path, self.headers.get("Range")))
                if path in server.status:
                    self.send_error(server.status[path])
                elif path in server.json:
                    body = json.dumps(server.json[path]).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif path in server.files:
                    self._file(server.files[path])
                else:
                    self.send_error(404)

            def _file(self, data: bytes) -> None:
                start = 0
                ranged = self.headers.get("Range")
                if ranged:
                    start = int(ranged.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_after is not None:  # announce everything, send a part, hang up
                    body, server.cut_after = body[:server.cut_after], None
                self.wfile.write(body)
                server.sent.append(len(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = LocalServer()
    yield s
    s.close()


@pytest.fixture
def isnet_at(server, monkeypatch):
    """isnet_at(data) -> the catalogue's background-removal entry, pointed at ``data`` on the local server
    (with its md5), so the real URL fetcher downloads it."""

    def make(data: bytes, md5_of: bytes | None = None):
        server.files["/isnet-general-use.onnx"] = data
        entry = catalogue.CATALOGUE[ISNET]
        source = replace(entry.source, url=server.url + "/isnet-general-use.onnx",
                         md5=hashlib.md5(md5_of if md5_of is not None else data).hexdigest())
        monkeypatch.setitem(catalogue.CATALOGUE, ISNET, replace(entry, source=source))
        return catalogue.CATALOGUE[ISNET]

    return make


class FakeHub:
    """A hub fetcher stand-in: serves ``files`` (LFS sha256 for .safetensors, git blob ids for the rest),
    ``chunk`` bytes per report; records the offset each fetch started at; ``stop_after`` reports raises
    KeyboardInterrupt (Ctrl-C); ``corrupt`` flips a byte of that file."""

    where = "the fake hub"

    def __init__(self, files: dict[str, bytes], chunk: int = 8) -> None:
        self.files, self.chunk = files, chunk
        self.offsets: list[tuple[str, int]] = []
        self.stop_after: int | None = None
        self.corrupt: str | None = None

    def list_files(self, entry) -> Listing:
        out = []
        for path, data in self.files.items():
            lfs = path.endswith(".safetensors")
            out.append(RemoteFile(path, size=len(data), sha256=hashlib.sha256(data).hexdigest() if lfs else None,
                                  git_sha1=None if lfs else git_sha1(data)))
        return Listing(tuple(out), revision="abc123")

    def fetch(self, entry, listing, file, dest, report) -> None:
        data = self.files[file.path]
        if self.corrupt == file.path:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        dest.parent.mkdir(parents=True, exist_ok=True)
        offset = dest.stat().st_size if dest.exists() else 0
        self.offsets.append((file.path, offset))
        with open(dest, "ab") as out:
            report(offset, len(data))
            for start in range(offset, len(data), self.chunk):
                if self.stop_after is not None:
                    if self.stop_after == 0:
                        self.stop_after = None
                        raise KeyboardInterrupt
                    self.stop_after -= 1
                out.write(data[start:start + self.chunk])
                out.flush()
                report(min(start + self.chunk, len(data)), len(data))


def vfusion3d_files() -> dict[str, bytes]:
    return {"model.safetensors": safetensors_bytes(64), "config.json": b'{"model_type": "test"}'}


# ----- list ------------------------------------------------------------------------------------------------

def test_list_json_every_model_of_every_kind(tmp_path, capsys):
    code, out, _ = cli(capsys, "models", "list", "--json", "--model-dir", str(tmp_path / "models"))
    assert code == 0 and len(out.strip().splitlines()) == 1  # one line
    rows = json.loads(out)
    assert all(REQUIRED_KEYS <= set(row) for row in rows)
    by_name = {row["name"]: row for row in rows}
    t2i = [e.hub_id for e in catalogue.models("text_to_image")]
    assert {"orbitmesh-preview", "vfusion3d", "triposr", "tiny-random", "sv3d_p", "sv3d_u", ISNET, *t2i} == set(by_name)
    assert {row["kind"] for row in rows} == set(catalogue.KINDS)
    assert by_name[ISNET]["kind"] == "background_removal" and by_name["sv3d_p"]["kind"] == "video"
    assert by_name["tiny-random"]["plumbing"] and not by_name["vfusion3d"]["plumbing"]
    assert {n for n, r in by_name.items() if r["available"]} == {"tiny-random", "orbitmesh-preview"}
    assert by_name["orbitmesh-preview"]["path"] == str(catalogue.get("orbitmesh-preview").source.bundled_path())
    assert by_name["vfusion3d"]["path"] is None and by_name["vfusion3d"]["source"] == "hub:facebook/vfusion3d"
    assert by_name[ISNET]["source"] == f"url:{catalogue.REMBG_URL}" and by_name[ISNET]["licence"] == "Apache-2.0"
    assert (by_name["vfusion3d"]["commercial"], by_name["sv3d_p"]["commercial"]) == ("no", "conditional")
    assert by_name["sv3d_p"]["gated"] and by_name["sv3d_p"]["size_gb"] == pytest.approx(9.4)

    code, out, _ = cli(capsys, "models", "list", "--model-dir", str(tmp_path / "models"))
    assert code == 0 and all(name in out for name in by_name) and "plumbing check" in out
    assert cli(capsys, "models", "path", "vfusion3d", "--model-dir", str(tmp_path))[0] == 1
    code, out, _ = cli(capsys, "models", "path", "orbitmesh-preview", "--model-dir", str(tmp_path))
    assert code == 0 and out.strip() == by_name["orbitmesh-preview"]["path"]


def test_availability_flips_when_a_model_is_put_in_place_by_hand(tmp_path, capsys):
    models = tmp_path / "models"
    (models / "triposr").mkdir(parents=True)
    (models / "triposr" / "config.yaml").write_text("x")
    assert not manager.model_row(catalogue.get("triposr"), models).available  # no weights: not a model
    (models / "triposr" / "model.ckpt").write_bytes(b"weights")
    row = manager.model_row(catalogue.get("triposr"), models)
    assert (row.available, row.path, row.location, row.managed) == (True, str(models / "triposr"), "model_dir", False)
    # remove never deletes what it did not place
    code, _, err = cli(capsys, "models", "remove", "triposr", "--yes", "--model-dir", str(models))
    assert code == 2 and "by hand" in err and (models / "triposr" / "model.ckpt").is_file()
    code, _, err = cli(capsys, "models", "remove", "orbitmesh-preview", "--yes", "--model-dir", str(models))
    assert code == 2 and "bundled" in err and catalogue.get("orbitmesh-preview").is_available(models)


# ----- install ----------------------------------------------------------------------------------------------

def test_install_a_tiny_vfusion3d_folder_then_load_and_remove_it(tmp_path, capsys):
    from orbitmesh.models import registry
    from orbitmesh.models.lrm import LRM, tiny

    src = tmp_path / "my-vfusion3d"
    LRM(tiny()).save_pretrained(src)  # config.json + model.safetensors, the released layout
    models = tmp_path / "models"
    code, out, _ = cli(capsys, "models", "install", "vfusion3d", str(src), "--model-dir", str(models))
    assert code == 0 and "CC-BY-NC" in out and src.is_dir()  # copied, the source kept
    assert sorted(p.name for p in (models / "vfusion3d").iterdir()) == ["config.json", "model.safetensors"]
    row = manager.model_row(catalogue.get("vfusion3d"), models)
    assert row.available and row.managed and row.path == str(models / "vfusion3d")
    source = registry.resolve_lrm_source(None, models)  # the loader finds it with no further step
    assert (source.name, source.kind, source.location) == ("vfusion3d", "path", str(models / "vfusion3d"))
    assert registry.load_lrm(source, model_dir=models).config == tiny()
    code, out, _ = cli(capsys, "models", "path", "vfusion3d", "--model-dir", str(models))
    assert (code, out.strip()) == (0, str(models / "vfusion3d"))

    code, _, err = cli(capsys, "models", "install", "vfusion3d", str(src), "--model-dir", str(models))
    assert code == 2 and "already in the model folder" in err
    code, out, _ = cli(capsys, "models", "remove", "vfusion3d", "--yes", "--model-dir", str(models))
    assert code == 0 and "freed" in out and not (models / "vfusion3d").exists()
    assert not catalogue.get("vfusion3d").is_available(models)
    assert cli(capsys, "models", "remove", "vfusion3d", "--yes", "--model-dir", str(models))[0] == 1  # nothing left


def test_install_checks_layout_hashes_and_safetensors(tmp_path, capsys, isnet_at):
    models = tmp_path / "models"
    good = safetensors_bytes(16)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.safetensors").write_bytes(good[:-5])  # a truncated copy
    code, _, err = cli(capsys, "models", "install", "vfusion3d", str(tmp_path / "cut"), "--model-dir", str(models))
    assert code == 2 and "truncated" in err and not (models / "vfusion3d").exists()
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "models", "install", "triposr", str(tmp_path / "empty"), "--model-dir", str(models))
    assert code == 2 and "model.ckpt" in err

    isnet_at(b"the real onnx bytes")
    (tmp_path / "other.onnx").write_bytes(b"some other model")
    code, _, err = cli(capsys, "models", "install", ISNET, str(tmp_path / "other.onnx"), "--model-dir", str(models))
    assert code == 2 and "md5" in err and not catalogue.get(ISNET).is_available(models)
    (tmp_path / "isnet.onnx").write_bytes(b"the real onnx bytes")
    code, _, _ = cli(capsys, "models", "install", ISNET, str(tmp_path / "isnet.onnx"), "--move", "--model-dir",
                     str(models))
    assert code == 0 and not (tmp_path / "isnet.onnx").exists()  # moved
    assert (models / ISNET / f"{ISNET}.onnx").read_bytes() == b"the real onnx bytes"

    # SV3D is one file, in the catalogue's sv3d/ layout; the video loader finds it there
    (tmp_path / "sv3d_p.safetensors").write_bytes(good)
    assert cli(capsys, "models", "install", "sv3d_u", str(tmp_path / "sv3d_p.safetensors"), "--model-dir",
               str(models))[0] == 2  # the wrong variant's file name
    assert cli(capsys, "models", "install", "sv3d_p", str(tmp_path / "sv3d_p.safetensors"), "--model-dir",
               str(models))[0] == 0
    assert catalogue.get("sv3d_p").source.local_path(models) == models / "sv3d" / "sv3d_p.safetensors"


def test_preprocessing_finds_the_background_model_in_the_model_folder(tmp_path, isnet_at):
    from orbitmesh.imaging import background

    models = tmp_path / "models"
    assert background.rembg_model_in(models) is None
    assert background.rembg_model_file(model_dir=models) == tmp_path / "u2net-home" / f"{ISNET}.onnx"  # rembg's
    isnet_at(b"onnx")
    (tmp_path / "x.onnx").write_bytes(b"onnx")
    manager.install(ISNET, tmp_path / "x.onnx", models)
    assert background.rembg_model_in(models) == str(models / ISNET / f"{ISNET}.onnx")
    assert background.rembg_model_file(model_dir=models) == models / ISNET / f"{ISNET}.onnx"
    assert background.rembg_model_file("/elsewhere/m.onnx", models) == Path("/elsewhere/m.onnx")  # explicit wins


# ----- download: the URL fetcher against a local server ------------------------------------------------------

def test_url_download_resumes_with_range_and_verifies_md5(tmp_path, server, isnet_at):
    data = bytes(range(256)) * 40  # 10 KB
    isnet_at(data)
    models = tmp_path / "models"
    target = models / ISNET
    server.cut_after = 3000  # the first transfer stops mid-way
    with pytest.raises(ModelError, match="stopped") as err:
        manager.download(ISNET, models)
    assert "resumes" in err.value.fix
    assert not target.exists() and not catalogue.get(ISNET).is_available(models)
    assert manager.partial_bytes(ISNET, models) == 3000  # kept under .partial/ only
    assert manager.model_row(catalogue.get(ISNET), models).partial_bytes == 3000

    events = []
    result = manager.download(ISNET, models, progress=events.append)
    assert server.log[-1] == ("/isnet-general-use.onnx", "bytes=3000-") and server.sent[-1] == len(data) - 3000
    assert result.status == "downloaded" and result.bytes_fetched == len(data) - 3000
    assert (target / f"{ISNET}.onnx").read_bytes() == data and catalogue.get(ISNET).is_available(models)
    assert all({"name", "file", "done_bytes", "total_bytes"} <= set(e) for e in events)
    assert events[-1]["done_bytes"] == events[-1]["total_bytes"] == len(data) and events[-1]["phase"] == "done"
    assert events[0]["done_bytes"] == 3000 and {e["name"] for e in events} == {ISNET}
    assert not (models / manager.PARTIAL_DIR / ISNET).exists() and manager.partial_bytes(ISNET, models) == 0
    assert manager.download(ISNET, models).status == "available"  # nothing fetched again


def test_a_corrupt_download_is_rejected_and_nothing_is_installed(tmp_path, server, isnet_at):
    isnet_at(b"what the server sends", md5_of=b"what the catalogue expects")
    models = tmp_path / "models"
    with pytest.raises(ModelError, match="failed verification.*md5") as err:
        manager.download(ISNET, models)
    assert "nothing was installed" in err.value.message
    assert not (models / ISNET).exists() and manager.partial_bytes(ISNET, models) == 0  # the bad file deleted
    assert not catalogue.get(ISNET).is_available(models)


# ----- download: hub repos with a fake hub fetcher -------------------------------------------------------------

def test_hub_download_ctrl_c_and_cancel_keep_only_partial_data(tmp_path):
    models = tmp_path / "models"
    hub = FakeHub(vfusion3d_files())
    hub.stop_after = 5  # Ctrl-C during the first file
    with pytest.raises(KeyboardInterrupt):
        manager.download("vfusion3d", models, fetcher=hub)
    assert not (models / "vfusion3d").exists() and not catalogue.get("vfusion3d").is_available(models)
    assert manager.partial_bytes("vfusion3d", models) == 5 * hub.chunk

    reports = []

    def cancel() -> bool:  # a server job's cancel: stops at the next chunk
        reports.append(1)
        return len(reports) > 3

    with pytest.raises(JobCancelled, match="partial download is kept"):
        manager.download("vfusion3d", models, fetcher=hub, cancel=cancel)
    assert not (models / "vfusion3d").exists()
    kept = manager.partial_bytes("vfusion3d", models)
    assert kept > 5 * hub.chunk

    event = threading.Event()  # what the server passes; its cancel endpoint sets it from another thread
    event.set()
    with pytest.raises(JobCancelled):
        manager.download("vfusion3d", models, fetcher=hub, cancel=event)
    assert manager.partial_bytes("vfusion3d", models) == kept and not (models / "vfusion3d").exists()
    event.clear()
    events = []
    result = manager.download("vfusion3d", models, fetcher=hub, cancel=event, progress=events.append)
    assert hub.offsets == [("model.safetensors", 0), ("model.safetensors", 40), ("model.safetensors", kept),
                           ("model.safetensors", kept), ("config.json", 0)]  # each went on from where the last stopped
    assert result.bytes_fetched == sum(map(len, hub.files.values())) - kept
    for name, data in hub.files.items():
        assert (models / "vfusion3d" / name).read_bytes() == data
    assert catalogue.get("vfusion3d").is_available(models) and manager.read_record("vfusion3d", models)["how"] == \
        "download"
    assert events[-1]["done_bytes"] == events[-1]["total_bytes"] == sum(map(len, hub.files.values()))

    event.set()  # already here: a set cancel does not matter, nothing is fetched
    assert manager.download("vfusion3d", models, fetcher=hub, cancel=event).status == "available"
    removed = manager.remove("vfusion3d", models)
    assert removed.removed == str(models / "vfusion3d") and not (models / "vfusion3d").exists()


def test_hub_download_hash_mismatch_and_one_file_layout(tmp_path):
    models = tmp_path / "models"
    hub = FakeHub(vfusion3d_files())
    hub.corrupt = "config.json"
    with pytest.raises(ModelError, match="config.json .* failed verification .*git_sha1"):
        manager.download("vfusion3d", models, fetcher=hub)
    assert not (models / "vfusion3d").exists() and not catalogue.get("vfusion3d").is_available(models)

    sv3d = FakeHub({"sv3d_u.safetensors": safetensors_bytes(8)})  # a one-file model: the file is renamed in
    manager.download("sv3d_u", models, fetcher=sv3d)
    assert (models / "sv3d" / "sv3d_u.safetensors").read_bytes() == sv3d.files["sv3d_u.safetensors"]
    assert catalogue.get("sv3d_u").is_available(models) and not catalogue.get("sv3d_p").is_available(models)
    assert not (models / manager.PARTIAL_DIR / "sv3d_u").exists()


def test_licence_refused_nothing_is_downloaded(tmp_path, capsys, monkeypatch):
    models = tmp_path / "models"
    hub = FakeHub(vfusion3d_files())
    with pytest.raises(manager.LicenceNotAccepted):
        manager.download("vfusion3d", models, fetcher=hub, confirm=False)
    seen = []
    with pytest.raises(manager.LicenceNotAccepted):
        manager.download("vfusion3d", models, fetcher=hub, confirm=lambda plan: seen.append(plan) or False)
    assert seen[0].licence.startswith("CC-BY-NC") and seen[0].commercial == "no" and seen[0].target.endswith(
        "vfusion3d")
    assert hub.offsets == [] and not models.exists()

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal, no --yes: refused
    code, out, err = cli(capsys, "models", "download", "vfusion3d", "--model-dir", str(models))
    assert code == 2 and "--yes" in err and "CC-BY-NC" in out and not models.exists()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))  # asked, answered no
    code, out, err = cli(capsys, "models", "download", "sv3d_p", "--model-dir", str(models))
    assert code == 2 and "USD 1M" in out and "not accepted" in err and not models.exists()


# ----- the real hub fetcher against a local hub stand-in (HF_ENDPOINT) -----------------------------------------

def test_real_hub_fetcher_lists_verifies_resumes_and_explains_gating(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    ckpt, config = bytes(range(200)) * 30, b"model: triposr\n"
    server.json["/api/models/stabilityai/TripoSR"] = {
        "id": "stabilityai/TripoSR", "sha": "c0ffee", "siblings": [
            {"rfilename": "model.ckpt", "size": len(ckpt), "blobId": "x",
             "lfs": {"sha256": hashlib.sha256(ckpt).hexdigest(), "size": len(ckpt), "pointerSize": 130}},
            {"rfilename": "config.yaml", "size": len(config), "blobId": git_sha1(config)},
            {"rfilename": "README.md", "size": 3, "blobId": "y"}]}
    server.files["/stabilityai/TripoSR/resolve/c0ffee/model.ckpt"] = ckpt
    server.files["/stabilityai/TripoSR/resolve/c0ffee/config.yaml"] = config
    models = tmp_path / "models"
    server.cut_after = 1000
    code, _, err = cli(capsys, "models", "download", "triposr", "--yes", "--model-dir", str(models))
    assert code == 2 and "resumes" in err and not (models / "triposr").exists()
    code, out, _ = cli(capsys, "models", "download", "triposr", "--yes", "--model-dir", str(models))
    assert code == 0 and "MIT" in out
    assert ("/stabilityai/TripoSR/resolve/c0ffee/model.ckpt", "bytes=1000-") in server.log
    assert sorted(p.name for p in (models / "triposr").iterdir()) == ["config.yaml", "model.ckpt"]  # not README
    assert catalogue.get("triposr").is_available(models)

    # SV3D is gated: the hub refuses the file without an accepted licence and a token
    server.json["/api/models/stabilityai/sv3d"] = {"id": "stabilityai/sv3d", "sha": "5ee", "gated": "manual",
                                                   "siblings": [{"rfilename": "sv3d_p.safetensors", "size": 10,
                                                                 "blobId": "z", "lfs": {"sha256": "0" * 64, "size": 10,
                                                                                        "pointerSize": 130}}]}
    server.status["/stabilityai/sv3d/resolve/5ee/sv3d_p.safetensors"] = 403
    code, _, err = cli(capsys, "models", "download", "sv3d_p", "--yes", "--model-dir", str(models))
    assert code == 2 and "gated" in err and "HF_TOKEN" in err and "accept its licence" in err
    assert not catalogue.get("sv3d_p").is_available(models)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_is_a_clear_error_naming_the_hub_and_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    models = tmp_path / "models"
    code, _, err = cli(capsys, "models", "download", "vfusion3d", "--yes", "--model-dir", str(models))
    assert code == 2 and "cannot reach the Hugging Face hub" in err and "HF_ENDPOINT" in err
    assert "orbitmesh models install" in err and not (models / "vfusion3d").exists()


# ----- the model folder: read-only, full ------------------------------------------------------------------------

def test_a_read_only_model_folder_lists_fine_and_refuses_downloads(tmp_path, capsys, monkeypatch, isnet_at):
    models = tmp_path / "shared-models"
    (models / "triposr").mkdir(parents=True)
    (models / "triposr" / "model.ckpt").write_bytes(b"w")

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(manager, "_touch", read_only)
    code, out, _ = cli(capsys, "models", "list", "--json", "--model-dir", str(models))
    assert code == 0 and {r["name"]: r for r in json.loads(out)}["triposr"]["available"]
    isnet_at(b"onnx")
    code, _, err = cli(capsys, "models", "download", ISNET, "--yes", "--model-dir", str(models))
    assert code == 2 and "read-only" in err and "--model-dir" in err and not (models / ISNET).exists()
    assert f"model folder: {models}" in err  # the command line names it; the error itself does not (servers)
    (tmp_path / "x.onnx").write_bytes(b"onnx")
    with pytest.raises(DiskError) as err:
        manager.install(ISNET, tmp_path / "x.onnx", models)
    assert err.value.reason == "read_only" and not (models / ISNET).exists()


def test_not_enough_space_is_refused_before_anything_is_fetched(tmp_path, monkeypatch):
    monkeypatch.setattr(manager, "free_bytes", lambda path: 10 << 20)
    hub = FakeHub(vfusion3d_files())
    with pytest.raises(DiskError, match="not enough free space") as err:
        manager.download("vfusion3d", tmp_path / "models", fetcher=hub)
    assert err.value.reason == "full" and hub.offsets == []


def test_server_lists_models_and_downloads_one_as_a_job(tmp_path, server, isnet_at):
    """GET /models and POST /models/{name}/download on a real server (the model file from the local fake
    server): the download is a job with progress events; a remote client is refused; paths are not shown."""
    import http.client
    import threading

    from orbitmesh.server.api_errors import ApiError
    from orbitmesh.server.app import ServerConfig, make_server, start_download
    from orbitmesh.settings import Settings

    data = bytes(range(256)) * 64
    isnet_at(data)
    settings = Settings(model_dir=tmp_path / "models", output_dir=tmp_path / "jobs", device="cpu")
    api = make_server(settings, ServerConfig(port=0))
    threading.Thread(target=api.serve_forever, daemon=True).start()
    host, port = api.url.removeprefix("http://").rsplit(":", 1)

    def call(method: str, path: str) -> tuple[int, dict | bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, json.loads(body) if resp.getheader("Content-Type") == "application/json" else body

    try:
        status, listing = call("GET", "/models")
        rows = {row["name"]: row for row in listing["models"]}
        assert status == 200 and rows[ISNET]["kind"] == "background_removal" and rows[ISNET]["available"] is False
        assert {"name", "kind", "licence", "commercial", "size_gb", "source", "available", "path"} <= set(rows[ISNET])
        assert str(tmp_path) not in json.dumps(listing)
        status, job = call("POST", f"/models/{ISNET}/download")
        assert status == 202, job
        status, stream = call("GET", f"/jobs/{job['id']}/events")
        events = [json.loads(line[6:]) for line in stream.decode().splitlines() if line.startswith("data: ")]
        assert events[-1]["status"] == "done" and events[-1]["kind"] == "download", events[-1]
        assert events[-1]["result"]["status"] == "downloaded" and str(tmp_path) not in json.dumps(events[-1])
        assert catalogue.get(ISNET).is_available(settings.model_dir)
        assert (settings.model_dir / ISNET / f"{ISNET}.onnx").read_bytes() == data
        status, listing = call("GET", "/models")
        assert {row["name"]: row for row in listing["models"]}[ISNET]["available"] is True
        status, removed = call("POST", f"/models/{ISNET}/remove")
        assert status == 200 and removed["removed"] is True and removed["freed_bytes"] >= len(data)
        assert not catalogue.get(ISNET).is_available(settings.model_dir)
        status, err = call("POST", "/models/no-such-model/download")
        assert status == 404 and err["error"] == "not_found"
        with pytest.raises(ApiError) as refused:  # a client on another machine (the server sees its address)
            start_download(api, api.manager, ISNET, client="192.168.1.20")
        assert refused.value.status == 403 and "--allow-remote-downloads" in refused.value.fix
    finally:
        api.close()
