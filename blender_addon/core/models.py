"""The backend's models: list, download (progress, cancel) and remove them, never in Blender's process (no bpy).

Both backends do the work where the backend runs:

* Local server: ``GET /models``, ``POST /models/{name}/download`` (a server job, followed by polling
  ``GET /jobs/{id}``; ``POST /jobs/{id}/cancel``), ``POST /models/{name}/remove``. A hub id keeps its ``/``
  in the URL path (each segment percent-encoded): ``/models/stabilityai/sdxl-turbo/download``.
* In Blender: a child process, ``<python> -m orbitmesh models list --json``,
  ``models download NAME --yes --progress jsonl`` (JSON lines: progress, then done / failed / cancelled;
  Cancel terminates the child, which keeps the partial download for the next time), ``models remove NAME
  --yes --json``.

A download is a :class:`DownloadHandle`: a thread follows it, Blender's main thread calls ``poll()`` (a copy
of its :class:`DownloadState` under a lock) and ``cancel()``. :data:`VIEW` is what the Models box and the
panel's model menu show (rows, running downloads, each model's last outcome); only the main thread
changes it. The ``--yes`` / server download take the licence as accepted: the add-on shows it first.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import client as http
from .backends import CANCEL_GRACE_S, KILL_AFTER_S, POLL_S, exit_error, no_window
from .errors import AddonError

# The catalogue's kinds, in the order the Models box shows them, with their labels.
KIND_LABELS = {"lrm": "Reconstruction", "video": "Orbit views (SV3D)", "text_to_image": "Text to image",
               "background_removal": "Background removal"}
KIND_ICONS = {"lrm": "MESH_MONKEY", "video": "RENDER_ANIMATION", "text_to_image": "FONT_DATA",
              "background_removal": "IMAGE_ALPHA"}
# A row's "commercial" ("yes" / "conditional" / "no") as the box says it.
COMMERCIAL_LABELS = {"yes": "commercial use: yes", "conditional": "commercial use: conditional",
                     "no": "commercial use: no"}
# The panel settings that get a model menu, and the kind of model each lists (background removal: none).
MENU_KINDS = {"model": "lrm"}
LIST_TIMEOUT_S = 120.0  # a child's `models list` (a cold Python start on a slow disk)
REMOVE_TIMEOUT_S = 300.0  # deleting a large model folder
TERMINAL = ("done", "failed", "cancelled")
LOG_MAX_BYTES = 2_000_000  # the shared download log (the children's stderr) starts over beyond this
KEPT = "the partial download is kept and resumes next time"


# ----- paths and argv ------------------------------------------------------------------------------


def child_argv(backend: Any, *args: str) -> list[str]:
    """``<python> -m orbitmesh models ARGS [--model-dir D]`` for an In-Blender backend."""
    argv = [backend.python, "-m", "orbitmesh", "models", *args]
    if getattr(backend, "model_dir", ""):
        argv += ["--model-dir", backend.model_dir]
    return argv


def _is_server(backend: Any) -> bool:
    return getattr(backend, "name", "") == "server"


def _json_lines(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line[:1] in ("{", "["):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _run_child(backend: Any, args: list[str], timeout: float, what: str) -> Any:
    """Run ``orbitmesh models ARGS`` in a child; its last JSON line. AddonError (with the child's own error
    and fix from stderr) when it printed none."""
    argv = child_argv(backend, *args)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              env=backend.env(), timeout=timeout, stdin=subprocess.DEVNULL, creationflags=no_window())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AddonError(f"cannot {what}: {exc}", fix="check the Python and site-packages settings in the OrbitMesh "
                                                      "add-on preferences") from None
    lines = _json_lines(done.stdout)
    if lines:
        return lines[-1]
    message, fix = stderr_error(done.stderr)
    raise AddonError(f"cannot {what}: {message or f'exit code {done.returncode}'}",
                     fix=fix or "install the full OrbitMesh package (with wheels) or set a site-packages folder that "
                                "has orbitmesh, in the add-on preferences")


def stderr_error(text: str) -> tuple[str, str | None]:
    """(message, fix) from an orbitmesh command's stderr (its ``error:`` / ``fix:`` lines, else the last line)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    message = next((ln[7:] for ln in reversed(lines) if ln.startswith("error: ")), lines[-1] if lines else "")
    fix = next((ln[5:] for ln in reversed(lines) if ln.startswith("fix: ")), None)
    return message[-400:], fix


# ----- list and remove ------------------------------------------------------------------------------


def clean_rows(data: Any) -> list[dict[str, Any]]:
    """The model rows of a ``models list --json`` / ``GET /models`` / ``/health`` answer (dicts with a name)."""
    if isinstance(data, dict):
        data = data.get("models")
    return [dict(r) for r in data or [] if isinstance(r, dict) and r.get("name")] if isinstance(data, list) else []


def list_models(backend: Any, timeout: float | None = None) -> list[dict[str, Any]]:
    """Every catalogue model with its kind, licence, commercial use, size and whether it is here (and, from
    these sources, ``downloadable``, ``managed`` and ``partial_bytes``). Raises AddonError."""
    if _is_server(backend):
        return clean_rows(backend.client.models(timeout))
    return clean_rows(_run_child(backend, ["list", "--json"], timeout or LIST_TIMEOUT_S, "list the models"))


def remove_model(backend: Any, name: str, timeout: float | None = None) -> dict[str, Any]:
    """Delete what the model manager placed for ``name`` (and its partial download): ``{"name", "removed": bool,
    "freed_bytes"}``. Raises AddonError (a model put in place by hand, a bundled one, an unknown name)."""
    if _is_server(backend):
        return backend.client.remove_model(name, timeout or REMOVE_TIMEOUT_S)
    answer = _run_child(backend, ["remove", name, "--yes", "--json"], timeout or REMOVE_TIMEOUT_S,
                        f"remove {name}")
    if not isinstance(answer, dict):
        raise AddonError(f"cannot remove {name}: unexpected answer {answer!r}", fix="please report it")
    error = answer.get("error")
    if isinstance(error, dict):
        raise AddonError(str(error.get("message") or f"cannot remove {name}"), fix=error.get("fix"))
    return answer


# ----- downloads -----------------------------------------------------------------------------------


@dataclass
class DownloadState:
    """One download as the box shows it. ``status``: starting, running, done, failed, cancelled."""

    name: str
    status: str = "starting"
    done_bytes: int = 0
    total_bytes: int | None = None
    progress: float = 0.0  # 0..1
    file: str = ""
    phase: str = ""
    message: str = "starting"
    error: dict[str, Any] | None = None  # {"message", "fix"}
    result: dict[str, Any] | None = None
    backend: str = ""
    cancelling: bool = False  # Cancel was pressed; the download stops at its next chunk

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def fraction(done: Any, total: Any) -> float:
    """done/total clamped to 0..1 (0 while the total is unknown)."""
    try:
        value = float(done) / float(total)
    except (TypeError, ValueError, ZeroDivisionError):
        return 0.0
    return 0.0 if math.isnan(value) else min(1.0, max(0.0, value))


class DownloadHandle:
    """A download followed by a thread; every public method is thread-safe."""

    backend = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._state = DownloadState(name, backend=self.backend)
        self._cancel = threading.Event()
        self._done = threading.Event()

    def poll(self) -> DownloadState:
        with self._lock:
            return replace(self._state)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()
        if not self.finished:
            self._set(cancelling=True)

    def wait(self, timeout: float | None = None) -> DownloadState:
        """Block until the download ends (scripts and tests); the final state."""
        self._done.wait(timeout)
        return self.poll()

    def _set(self, **values: Any) -> None:
        with self._lock:
            if "progress" in values:  # never steps back
                values["progress"] = max(self._state.progress, values["progress"])
            for key, value in values.items():
                setattr(self._state, key, value)

    def _finish(self, status: str, **values: Any) -> None:
        if status == "done":
            values.setdefault("progress", 1.0)
        values.setdefault("message", status)
        self._set(status=status, **values)
        self._done.set()

    def _guarded(self, follow) -> None:
        try:
            follow()
        except Exception as exc:  # never a silent thread: the box must show it
            self._finish("failed", error={"message": f"internal error following the download: {exc}",
                                          "fix": "see the system console; please report it"})


class ServerDownload(DownloadHandle):
    """``POST /models/{name}/download`` and the job it starts, polled until it ends."""

    backend = "server"

    def __init__(self, client: http.Client, name: str) -> None:
        super().__init__(name)
        self.client = client
        answer = client.download_model(name)  # ServerError: refused
        self.job_id = str(answer["id"])
        self._set(status="running", message="started on the server")
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._guarded, args=(self._follow,), daemon=True,
                                        name=f"orbitmesh-model-download-{self.job_id}")
        self._thread.start()

    def cancel(self) -> None:
        super().cancel()
        self._wake.set()

    def _follow(self) -> None:
        job_path = f"/jobs/{urllib.parse.quote(self.job_id, safe='')}"
        cancel_sent: float | None = None
        failures = 0
        while True:
            if self._cancel.is_set() and cancel_sent is None:
                cancel_sent = time.monotonic()
                try:
                    self.client._json("POST", job_path + "/cancel", body=b"")
                except http.ServerError as exc:
                    if exc.status != 409:  # 409: it ended meanwhile; the poll says how
                        self._set(message=f"cancel failed: {exc.message}")
            try:
                job = self.client._json("GET", job_path)
                failures = 0
            except http.ServerError as exc:
                failures += 1
                if exc.status == 404 or failures * POLL_S > 15.0:
                    self._finish("failed", error={"message": f"lost the download on the server: {exc.message}",
                                                  "fix": exc.fix or "Refresh the model list; download again"})
                    return
                self._sleep()
                continue
            status = str(job.get("status") or "running")
            total = job.get("total")
            self._set(status="running" if status not in TERMINAL else self.poll().status,
                      done_bytes=int(job.get("step") or 0), total_bytes=int(total) if total else None,
                      progress=float(job.get("progress") or 0.0), message=str(job.get("message") or ""))
            if status == "done":
                self._finish("done", result=job.get("result") or {})
                return
            if status in ("failed", "cancelled"):
                error = job.get("error") or {}
                self._finish(status, message=f"cancelled: {KEPT}" if status == "cancelled" else "failed",
                             error=None if status == "cancelled" else
                             {"message": error.get("message") or "the download failed", "fix": error.get("fix")})
                return
            if cancel_sent is not None and time.monotonic() - cancel_sent > CANCEL_GRACE_S:
                self._finish("cancelled", message="cancelled (the server is still stopping the download)")
                return
            self._sleep()

    def _sleep(self) -> None:
        self._wake.wait(POLL_S)
        self._wake.clear()


class ChildDownload(DownloadHandle):
    """``<python> -m orbitmesh models download NAME --yes --progress jsonl`` in a child process (In Blender);
    Cancel terminates it (the child keeps the partial download and exits; killed if it does not)."""

    backend = "inprocess"

    def __init__(self, backend: Any, name: str, log_path: str | Path | None = None) -> None:
        super().__init__(name)
        self.argv = child_argv(backend, "download", name, "--yes", "--progress", "jsonl")
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / "orbitmesh-models.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        big = self.log_path.is_file() and self.log_path.stat().st_size > LOG_MAX_BYTES
        self._log = open(self.log_path, "w" if big else "a", encoding="utf-8")  # starts over when large
        self._log.write(" ".join(self.argv) + "\n")
        self._log.flush()
        self.returncode: int | None = None
        try:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
                                         env=backend.env(), text=True, encoding="utf-8", errors="replace", bufsize=1,
                                         creationflags=no_window())
        except OSError as exc:
            self._log.close()
            raise AddonError(f"cannot start {self.argv[0]}: {exc.strerror or exc}",
                             fix="check the Python and site-packages settings in the OrbitMesh add-on preferences"
                             ) from None
        self._set(message="starting the download process")
        self._thread = threading.Thread(target=self._guarded, args=(self._follow,), daemon=True,
                                        name=f"orbitmesh-model-download-{self.proc.pid}")
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cancel(self) -> None:
        super().cancel()
        if self.proc.poll() is None:
            self.proc.terminate()  # the CLI turns SIGTERM into a clean stop that keeps the partial data
            timer = threading.Timer(KILL_AFTER_S, self._kill_if_alive)
            timer.daemon = True
            timer.start()

    def _kill_if_alive(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def _follow(self) -> None:
        terminal: dict[str, Any] | None = None
        try:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                event = _json_lines(line)
                event = event[0] if event and isinstance(event[0], dict) else None
                if event is None:
                    if line.strip():
                        self._log.write(line)
                    continue
                kind = event.get("event")
                if kind == "progress":
                    done, total = int(event.get("done_bytes") or 0), event.get("total_bytes")
                    self._set(status="running", done_bytes=done, total_bytes=int(total) if total else None,
                              progress=fraction(done, total), file=str(event.get("file") or ""),
                              phase=str(event.get("phase") or ""),
                              message=f"{event.get('phase') or 'download'} {event.get('file') or ''}".strip())
                elif kind in ("done", "failed", "cancelled"):
                    terminal = event
            self.returncode = self.proc.wait()
        finally:
            self._log.close()
        if terminal is not None and terminal["event"] == "done":
            self._finish("done", result={k: v for k, v in terminal.items() if k != "event"})
        elif terminal is not None and terminal["event"] == "failed":
            self._finish("failed", error={"message": str(terminal.get("message") or "the download failed"),
                                          "fix": terminal.get("fix")})
        elif self._cancel.is_set() or (terminal is not None and terminal["event"] == "cancelled"):
            self._finish("cancelled", message=f"cancelled: {KEPT}")
        else:
            self._finish("failed", error=exit_error(self.returncode, self.log_path, "the model download process"))


def start_download(backend: Any, name: str, *, log_path: str | Path | None = None) -> DownloadHandle:
    """Start downloading catalogue model ``name`` with ``backend`` (the licence was shown and accepted).
    Raises AddonError when it cannot start (server refused it, no Python)."""
    if _is_server(backend):
        return ServerDownload(backend.client, name)
    return ChildDownload(backend, name, log_path)


# ----- what the box and the menu show -----------------------------------------------------------------


def size_text(size_gb: Any) -> str:
    """'1.68 GB', '180 MB', '-' (nothing to download)."""
    try:
        gb = float(size_gb)
    except (TypeError, ValueError):
        return "-"
    if gb <= 0:
        return "-"
    return f"{gb:.2f} GB" if gb >= 1 else f"{gb * 1000:.0f} MB"


def bytes_text(n: int) -> str:
    """Bytes as '1.6 MB', '120 MB', '1.68 GB'."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n < 1e7 else f"{n / 1e6:.0f} MB"


def status_text(row: dict[str, Any], state: DownloadState | None = None) -> str:
    """'available', 'not downloaded', 'partial (120 MB)', 'downloading 42% (120 MB of 300 MB)'."""
    if state is not None and not state.terminal:
        text = f"downloading {state.progress * 100:.0f}%"
        if state.total_bytes:
            text += f" ({bytes_text(state.done_bytes)} of {bytes_text(state.total_bytes)})"
        return text + (", cancelling" if state.cancelling else "")
    if row.get("available"):
        return "available"
    partial = int(row.get("partial_bytes") or 0)
    if partial:
        return f"partial ({bytes_text(partial)})"
    return "not downloaded"


def licence_text(row: dict[str, Any]) -> str:
    """'MIT, commercial use: yes' (the licence's short name)."""
    licence = str(row.get("licence") or "?").split(" (")[0]
    commercial = COMMERCIAL_LABELS.get(str(row.get("commercial")), "commercial use: unknown")
    return f"{licence}, {commercial}"


def sorted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by kind in KIND_LABELS order, the backend's order kept within a kind."""
    order = {kind: i for i, kind in enumerate(KIND_LABELS)}
    return sorted(rows, key=lambda r: order.get(str(r.get("kind")), len(order)))


def menu_rows(rows: list[dict[str, Any]], kind: str = "lrm") -> list[dict[str, Any]]:
    """The models of ``kind`` for a model menu: the available ones first, each group in the backend's order."""
    mine = [r for r in rows if r.get("kind") == kind]
    return [r for r in mine if r.get("available")] + [r for r in mine if not r.get("available")]


def job_model(choice: str, rows: list[dict[str, Any]], default_model: str,
              commercial_only: bool = False) -> tuple[str, str]:
    """(the model a job will use, a note): the name typed or picked, else the backend's default. The note says
    when that model is not downloaded or is refused under Commercial use only; '' when all is well."""
    choice = (choice or "").strip()
    name = choice or (default_model or "")
    if not name:
        return "", "the backend's default (Check Backend to see which)"
    row = next((r for r in rows if r.get("name") == name), None)
    notes = []
    if not choice:
        notes.append("backend default")
    if row is not None and not row.get("available"):
        notes.append("not downloaded: Download it under Models in the add-on preferences")
    if row is not None and commercial_only and row.get("commercial") == "no":
        # A model named is refused; for its default the backend picks a commercial one or refuses the job.
        notes.append("non-commercial: refused under Commercial use only" if choice else
                     "non-commercial: under Commercial use only the backend picks another model or refuses")
    return name, ", ".join(notes)


def health_rows(health: dict[str, Any] | None) -> list[dict[str, Any]]:
    return clean_rows((health or {}).get("models"))


class ModelsView:
    """What the Models box and the model menu show; changed on Blender's main thread only.

    ``rows`` come from the last list of ``backend`` (a backend name: "server" / "inprocess"); ``downloads``
    are the running ones, name -> handle; ``outcomes`` each model's last finished download or removal
    (a :class:`DownloadState`, e.g. a failure with its message and fix), until the next one.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.backend = ""
        self.error: dict[str, Any] | None = None
        self.loading = False
        self.listed_at = 0.0
        self.downloads: dict[str, DownloadHandle] = {}
        self.outcomes: dict[str, DownloadState] = {}

    def set_rows(self, backend: str, rows: list[dict[str, Any]]) -> None:
        self.backend, self.rows, self.error, self.loading = backend, list(rows), None, False
        self.listed_at = time.time()

    def set_error(self, backend: str, message: str, fix: str | None) -> None:
        self.backend, self.error, self.loading = backend, {"message": message, "fix": fix}, False
        self.rows = []

    def rows_for(self, backend: str, health: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], bool]:
        """(rows, listed): this backend's last list, else the rows of its last health check (listed False:
        they lack download details until a Refresh)."""
        if self.backend == backend and self.rows:
            return self.rows, True
        return health_rows(health), False

    def start(self, handle: DownloadHandle) -> None:
        self.downloads[handle.name] = handle
        self.outcomes.pop(handle.name, None)

    def state_of(self, name: str, backend: str | None = None) -> DownloadState | None:
        """The running download of ``name``, else its last outcome, else None (of ``backend`` only, when given:
        the other backend's model folder may differ)."""
        handle = self.downloads.get(name)
        state = handle.poll() if handle is not None else self.outcomes.get(name)
        return state if state is not None and (backend is None or state.backend == backend) else None

    def collect(self) -> list[DownloadState]:
        """Move the downloads that ended to ``outcomes``; their final states (the caller refreshes the list)."""
        ended = []
        for name, handle in list(self.downloads.items()):
            if handle.finished:
                del self.downloads[name]
                self.outcomes[name] = state = handle.poll()
                ended.append(state)
        return ended

    def note(self, name: str, backend: str, status: str, message: str, error: dict[str, Any] | None = None) -> None:
        """Record the outcome of something other than a download (a removal, a refused start) for the box."""
        self.outcomes[name] = DownloadState(name, status=status, message=message, error=error, backend=backend,
                                            progress=1.0 if status == "done" else 0.0)

    @property
    def active(self) -> bool:
        return bool(self.downloads)

    def cancel_all(self, *, children_only: bool = False) -> int:
        """Cancel the running downloads (only the In-Blender children: a server's download is the server's);
        how many."""
        handles = [h for h in self.downloads.values() if not children_only or isinstance(h, ChildDownload)]
        for handle in handles:
            handle.cancel()
        return len(handles)


VIEW = ModelsView()
