"""The model manager: list, download, install and remove the models of the catalogue in the model folder.

Every model of :mod:`orbitmesh.models.catalogue` (every kind) is a row of :func:`list_models`: its licence,
whether that allows commercial use, its size, where it comes from, whether it is on this machine and where.
:func:`download` fetches a model into the layout the catalogue's ``is_available``/``local_path`` look for
(``Source.install_path`` under the model folder), so the loaders find it with no further step:

- the licence (and its commercial condition) is confirmed first (``confirm``): nothing is written before;
- the model folder must be writable (a read-only shared folder lists fine and refuses downloads with a
  DiskError) and hold the download with a margin;
- bytes go only to ``<model_dir>/.partial/<name>/`` (``<org>--<name>`` for hub ids), file by file as
  ``<file>.part``: an interrupted download (network, Ctrl-C, a cancelled server job) resumes from there;
- each file is verified (size; the hub's LFS sha256 or git blob id, the catalogue's md5 for a URL model)
  before it counts; a corrupt file is deleted and the download fails with nothing installed;
- the finished folder is renamed into place in one step (a one-file model: the file), so nothing
  half-written is ever at the model's own path; a record in ``<model_dir>/.orbitmesh-installed/`` says the
  manager put it there, which is what :func:`remove` deletes (never a model put there by hand, a hub cache
  copy or the bundled preview model).

:func:`install` does the same with a file or folder already on disk (checked against the catalogue's layout,
known hashes and safetensors headers: :mod:`orbitmesh.models.model_files`). The transfer itself is a
:class:`~orbitmesh.models.fetchers.Fetcher` (hub or plain URL); tests pass their own. Progress is a
callback taking one dict per update (:data:`PROGRESS_KEYS`), cancellation a ``threading.Event`` or a
callable checked at every chunk (it raises :class:`~orbitmesh.errors.JobCancelled`, the partial data
kept), so a server job thread can run a download.
Importing this module is cheap: no torch, no hub library.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from orbitmesh import atomic
from orbitmesh.errors import DiskError, InputError, JobCancelled, ModelError, OrbitMeshError, disk_error
from orbitmesh.models import catalogue
from orbitmesh.models.catalogue import KINDS, ModelEntry
from orbitmesh.models.fetchers import Fetcher, Listing, RemoteFile, fetcher_for
from orbitmesh.models.model_files import check_install_source, verify

PARTIAL_DIR = ".partial"  # resumable partial downloads, under the model folder
RECORDS_DIR = ".orbitmesh-installed"  # one JSON per model the manager placed (what `remove` may delete)
SPACE_FACTOR, SPACE_EXTRA = 1.05, 64 << 20  # free space wanted: the download plus 5 % and 64 MiB
PROGRESS_KEYS = ("name", "file", "done_bytes", "total_bytes")  # plus phase, file_done_bytes, file_total_bytes
PROGRESS_INTERVAL_S = 0.2  # at most this often per file, plus each file's end

Progress = Callable[[dict[str, Any]], None]
Cancel = Any  # a threading.Event (is_set) or a callable returning True to stop
Confirm = Any  # True (accepted), False, or a callable(DownloadPlan) -> bool


class LicenceNotAccepted(OrbitMeshError):
    """The licence of a model was not accepted (answered no, or no terminal to ask on): nothing was downloaded."""


# ----- where a model is ----------------------------------------------------------------------------------

def safe_name(name: str) -> str:
    """A model name as one folder name: ``stabilityai/sdxl-turbo`` -> ``stabilityai--sdxl-turbo``."""
    return name.replace("/", "--")


def locate(entry: ModelEntry, model_dir: str | os.PathLike) -> tuple[Path | None, str | None]:
    """(path, location) of a model on this machine, disk only: location is "builtin" (no path), "bundled"
    (inside the package), "model_dir" (the catalogue's local layout), "hub_cache" (a hub cache the loader
    reads: the snapshot folder, or the file for one-file models), "rembg_home" (rembg's own folder);
    (None, None) when it is not here."""
    source = entry.source
    if source.builtin:
        return None, "builtin"
    bundled = source.bundled_path()
    if bundled is not None:
        return (bundled, "bundled") if entry.is_available(model_dir) else (None, None)
    local = source.local_path(model_dir)
    if local is not None:
        return local, "model_dir"
    cached = entry.cached_file(model_dir)
    if cached is None:
        return None, None
    if entry.kind == "background_removal":
        return cached, "rembg_home"
    return (cached if entry.kind == "video" else cached.parent), "hub_cache"


def model_path(name: str, model_dir: str | os.PathLike) -> Path | None:
    """Where model ``name`` is on this machine (see :func:`locate`), or None (not here, or built in)."""
    return locate(catalogue.get(name), Path(model_dir).expanduser())[0]


def _records(model_dir: Path) -> Path:
    return model_dir / RECORDS_DIR


def read_record(name: str, model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manager's record of a model it placed ({name, path (relative), how, source, files, ...}), or None."""
    path = _records(Path(model_dir).expanduser()) / f"{safe_name(name)}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("path"), str) else None


def _managed_path(entry: ModelEntry, model_dir: Path) -> Path | None:
    """The model's path when the manager placed it there and it is still there, else None."""
    record = read_record(entry.name, model_dir)
    if record is None:
        return None
    path = model_dir / record["path"]
    inside = Path(os.path.normpath(path)).is_relative_to(Path(os.path.normpath(model_dir)))
    return path if inside and (path.exists() or path.is_symlink()) else None


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def partial_bytes(name: str, model_dir: str | os.PathLike) -> int:
    """Bytes of a download of ``name`` waiting under ``.partial/`` to be resumed (0 when none)."""
    staging = Path(model_dir).expanduser() / PARTIAL_DIR / safe_name(name)
    return _tree_bytes(staging) if staging.is_dir() else 0


# ----- list ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRow:
    """One catalogue model as `orbitmesh models list --json` and the server show it.

    ``source``: "hub:<org>/<name>", "url:<address>", "bundled" or "builtin". ``available``: usable here
    without a download (model folder, a hub cache, rembg's folder, bundled, built in). ``path``: where it is
    (None when not here or built in); ``location`` which of those places. ``managed``: placed by the model
    manager (so ``remove`` may delete it). ``partial_bytes``: a resumable download waiting in ``.partial``.
    ``plumbing``: not a real model (tiny-random).
    """

    name: str
    kind: str
    licence: str
    commercial: str
    size_gb: float
    source: str
    available: bool
    path: str | None
    kind_label: str = ""
    condition: str | None = None
    licence_url: str = ""
    gated: bool = False
    hub_id: str | None = None
    url: str | None = None
    location: str | None = None
    managed: bool = False
    downloadable: bool = False
    partial_bytes: int = 0
    default: bool = False
    plumbing: bool = False
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_label(entry: ModelEntry) -> str:
    if entry.source.builtin:
        return "builtin"
    if entry.source.bundled:
        return "bundled"
    if entry.source.url:
        return f"url:{entry.source.url}"
    return f"hub:{entry.hub_id}"


def model_row(entry: ModelEntry, model_dir: str | os.PathLike) -> ModelRow:
    model_dir = Path(model_dir).expanduser()
    path, location = locate(entry, model_dir)
    return ModelRow(
        name=entry.name, kind=entry.kind, licence=entry.licence, commercial=entry.commercial, size_gb=entry.size_gb,
        source=source_label(entry), available=entry.is_available(model_dir), path=str(path) if path else None,
        kind_label=KINDS[entry.kind], condition=entry.condition, licence_url=entry.licence_url, gated=entry.gated,
        hub_id=entry.hub_id, url=entry.source.url, location=location,
        managed=_managed_path(entry, model_dir) is not None, downloadable=entry.source.downloadable,
        partial_bytes=partial_bytes(entry.name, model_dir), default=entry.default, plumbing=entry.source.builtin,
        description=entry.description)


def list_models(model_dir: str | os.PathLike, kind: str | None = None) -> list[ModelRow]:
    """A row per catalogue model (of ``kind`` when given), in catalogue order; reads the disk only."""
    return [model_row(entry, model_dir) for entry in catalogue.models(kind)]


def models_json(model_dir: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """:func:`list_models` as JSON-ready dicts (what `orbitmesh models list --json` prints)."""
    return [row.to_dict() for row in list_models(model_dir, kind)]


# ----- plan and confirm -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DownloadPlan:
    """What a download of one model would do, for the licence prompt (CLI) or a confirmation dialog (server)."""

    name: str
    kind: str
    licence: str
    licence_url: str
    commercial: str
    condition: str | None
    gated: bool
    size_gb: float
    source: str
    target: str  # where the model will be
    available: bool  # already here (nothing to download)
    path: str | None  # where it already is
    partial_bytes: int  # a resumable download waiting

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def notice(self) -> str:
        """The licence notice shown before downloading (several lines)."""
        use = catalogue.COMMERCIAL[self.commercial] + (f": {self.condition}" if self.condition else "")
        lines = [f"{self.name} ({self.source}, about {self.size_gb:g} GB)",
                 f"  licence: {self.licence}" + (f"  {self.licence_url}" if self.licence_url else ""),
                 f"  commercial use: {self.commercial} ({use})"]
        if self.gated:
            lines.append("  gated on the hub: accept the licence on its page and log in (`hf auth login` or HF_TOKEN)")
        lines.append(f"  into: {self.target}")
        if self.partial_bytes:
            lines.append(f"  resumes a partial download ({_size(self.partial_bytes)} already here)")
        return "\n".join(lines)


def _entry(name: str) -> ModelEntry:
    entry = catalogue.get(name)
    if not entry.source.downloadable:
        what = "built in (made from code)" if entry.source.builtin else "bundled with orbitmesh"
        raise ModelError(f"{name} is {what}: there is nothing to download, install or remove",
                         fix=f"it is always available: pass --model {name}")
    return entry


def plan(name: str, model_dir: str | os.PathLike) -> DownloadPlan:
    """What :func:`download` of ``name`` would do (disk only); ModelError for an unknown or built-in model."""
    entry = _entry(name)
    model_dir = Path(model_dir).expanduser()
    path, _ = locate(entry, model_dir)
    return DownloadPlan(
        name=entry.name, kind=entry.kind, licence=entry.licence, licence_url=entry.licence_url,
        commercial=entry.commercial, condition=entry.condition, gated=entry.gated, size_gb=entry.size_gb,
        source=source_label(entry), target=str(model_dir / str(entry.source.install_path)),
        available=entry.is_available(model_dir), path=str(path) if path else None,
        partial_bytes=partial_bytes(entry.name, model_dir))


def _confirmed(confirm: Confirm, the_plan: DownloadPlan) -> None:
    accepted = confirm(the_plan) if callable(confirm) else bool(confirm)
    if not accepted:
        raise LicenceNotAccepted(f"the licence of {the_plan.name} ({the_plan.licence}) was not accepted: "
                                 "nothing was downloaded", fix="accept it (answer y, or pass --yes) to download")


# ----- disk checks ----------------------------------------------------------------------------------------

_WRITE_FIX = ("download on a machine that may write the shared model folder (or ask its owner), or point "
              "--model-dir / model_dir / ORBITMESH_MODEL_DIR at a writable folder")


def _touch(path: Path) -> None:
    """Create and delete one small file (the write probe; tests inject an OSError here)."""
    with open(path, "wb") as f:
        f.write(b"probe")
    path.unlink()


def check_writable(model_dir: Path) -> Path:
    """Create ``<model_dir>/.partial`` and probe a write there; a DiskError (read-only, full, permission)
    naming the model folder otherwise. Returns the .partial folder."""
    partial = model_dir / PARTIAL_DIR
    try:
        partial.mkdir(parents=True, exist_ok=True)
        _touch(partial / f".write-probe-{os.getpid()}-{threading.get_ident()}")
    except OSError as exc:
        error = disk_error(exc, "the model folder", _WRITE_FIX)  # no path: servers send it to clients
        if error is None:
            raise
        raise error from exc
    return partial


def free_bytes(path: Path) -> int:
    """Free space of the file system holding ``path`` (its nearest existing folder)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_space(model_dir: Path, need_bytes: int, what: str) -> None:
    """A DiskError (reason "full") unless the model folder has ``need_bytes`` plus the margin free."""
    want = int(need_bytes * SPACE_FACTOR) + SPACE_EXTRA
    free = free_bytes(model_dir)
    if need_bytes > 0 and free < want:
        raise DiskError(f"not enough free space in the model folder for {what}: {_size(need_bytes)} "
                        f"needed (+ margin), {_size(free)} free", reason="full",
                        fix="free some space (`orbitmesh models remove NAME` frees a model), or use another "
                            "--model-dir")


@contextlib.contextmanager
def _exclusive(lock_path: Path, name: str) -> Iterator[None]:
    """One download/install/remove of a model at a time, across threads and processes (an OS file lock,
    released when the process dies; the empty lock file stays, as deleting it would race)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise ModelError(f"{name} is being downloaded, installed or removed by another process or job",
                             fix="wait for it to finish, then run this again") from exc
        yield


def _size(n: int | float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# ----- progress and cancel ----------------------------------------------------------------------------------

def _is_cancelled(cancel: Cancel) -> bool:
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if callable(is_set) else cancel())


@dataclass
class _Meter:
    """Turns per-file byte counts into progress events (whole-model totals), throttled, checking cancel."""

    name: str
    progress: Progress | None
    cancel: Cancel
    sizes: dict[str, int | None]  # file -> size (None: unknown until its response says)
    done: dict[str, int] = field(default_factory=dict)
    last: float = float("-inf")

    def total(self) -> int | None:
        return None if any(v is None for v in self.sizes.values()) else sum(self.sizes.values())  # type: ignore

    def emit(self, file: str, phase: str, *, force: bool = False) -> None:
        if self.progress is None or not (force or time.monotonic() - self.last >= PROGRESS_INTERVAL_S):
            return
        self.last = time.monotonic()
        self.progress({"name": self.name, "file": file, "done_bytes": sum(self.done.values()),
                       "total_bytes": self.total(), "phase": phase, "file_done_bytes": self.done.get(file, 0),
                       "file_total_bytes": self.sizes.get(file)})

    def reporter(self, file: str, phase: str = "download") -> Callable[[int, int | None], None]:
        def report(size: int, total: int | None = None) -> None:
            if _is_cancelled(self.cancel):
                raise JobCancelled(f"the download of {self.name} was cancelled (the partial download is kept and "
                                   "resumes next time)")
            if total is not None and self.sizes.get(file) is None:
                self.sizes[file] = total
            self.done[file] = size
            self.emit(file, phase, force=total is not None and size >= total)
        return report


# ----- download ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DownloadResult:
    """``status``: "downloaded", "installed" or "available" (it was already here: nothing done)."""

    name: str
    status: str
    path: str | None
    bytes_fetched: int = 0
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files": list(self.files)}


def _state_of(listing: Listing) -> dict[str, Any]:
    return {"revision": listing.revision,
            "files": {f.path: {"size": f.size, "sha256": f.sha256, "git_sha1": f.git_sha1, "md5": f.md5}
                      for f in listing.files}}


def _prepare_staging(staging: Path, state_path: Path, listing: Listing) -> None:
    """Keep a previous partial download only if it was of the same files (revision and hashes)."""
    state = _state_of(listing)
    try:
        previous = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if previous != state and staging.exists():
        shutil.rmtree(staging)
    atomic.write_json(state_path, state)


def _check_target(entry: ModelEntry, target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise ModelError(f"{target} already exists but does not hold a complete {entry.name} model",
                         fix=f"move it away or delete it, then run the download (or `orbitmesh models install "
                             f"{entry.name} PATH`) again")


def _write_record(entry: ModelEntry, model_dir: Path, rel: str, how: str, source: str,
                  files: dict[str, Any], revision: str | None = None) -> None:
    atomic.write_json(_records(model_dir) / f"{safe_name(entry.name)}.json", {
        "name": entry.name, "path": rel, "how": how, "source": source, "revision": revision,
        "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files})


def download(name: str, model_dir: str | os.PathLike, *, progress: Progress | None = None, cancel: Cancel = None,
             confirm: Confirm = True, fetcher: Fetcher | None = None) -> DownloadResult:
    """Download catalogue model ``name`` into ``model_dir`` (see the module docstring for the steps).

    ``confirm``: True when the caller has shown and accepted the licence (the server), a callable
    ``(DownloadPlan) -> bool`` to ask (the CLI), False to refuse (LicenceNotAccepted, nothing written).
    ``progress``: called with ``{name, file, done_bytes, total_bytes, phase, file_done_bytes,
    file_total_bytes}`` (total_bytes None while a size is unknown). ``cancel``: Event or callable, checked
    at every chunk: JobCancelled, the partial data kept for the next call. ``fetcher``: the transfer
    (default: the hub, or a plain URL for a URL model). Errors: ModelError (network, access, a corrupt
    file, a lock held by another download), DiskError (read-only or full model folder).
    """
    entry = _entry(name)
    model_dir = Path(model_dir).expanduser()
    rel = str(entry.source.install_path)
    target = model_dir / rel
    if entry.is_available(model_dir):
        here = locate(entry, model_dir)[0]
        return DownloadResult(entry.name, "available", str(here) if here else None)
    _check_target(entry, target)
    _confirmed(confirm, plan(name, model_dir))
    partial = check_writable(model_dir)
    key = safe_name(entry.name)
    staging, state_path = partial / key, partial / f"{key}.json"
    check_space(model_dir, int(entry.size_gb * 1e9) - partial_bytes(name, model_dir), entry.name)
    fetcher = fetcher or fetcher_for(entry)
    with _exclusive(partial / f"{key}.lock", entry.name):
        if entry.is_available(model_dir):  # another process finished it while we waited
            here = locate(entry, model_dir)[0]
            return DownloadResult(entry.name, "available", str(here) if here else None)
        listing = fetcher.list_files(entry)
        for file in listing.files:
            _check_relative(file.path, fetcher.where)
        _prepare_staging(staging, state_path, listing)
        sizes = {f.path: f.size for f in listing.files}
        meter = _Meter(entry.name, progress, cancel, dict(sizes))
        have = {f.path: _have(staging, f) for f in listing.files}
        check_space(model_dir, sum((f.size or 0) - have[f.path] for f in listing.files), entry.name)
        fetched = 0
        for file in listing.files:
            final, part = staging / file.path, staging / f"{file.path}.part"
            if final.is_file() and (file.size is None or final.stat().st_size == file.size):
                meter.done[file.path] = final.stat().st_size  # verified when it was completed
                meter.sizes[file.path] = final.stat().st_size
                continue
            before = part.stat().st_size if part.exists() else 0
            fetcher.fetch(entry, listing, file, part, meter.reporter(file.path))
            got = part.stat().st_size if part.exists() else 0
            fetched += max(0, got - before)
            if file.size is not None and got < file.size:  # the source stopped early: keep it for resuming
                raise ModelError(f"the download of {entry.name} stopped at {got} of {file.size} bytes of {file.path}",
                                 fix="run the same download again: it resumes where it stopped")
            meter.emit(file.path, "verify", force=True)
            problem = verify(part, file)
            if problem is not None:
                part.unlink()
                raise ModelError(f"{entry.name}: {file.path} from {fetcher.where} failed verification ({problem}); "
                                 "it was deleted and nothing was installed",
                                 fix="run the download again; if it fails again, a proxy or mirror (HF_ENDPOINT) "
                                     "is altering the file")
            os.replace(part, final)
            meter.done[file.path] = got
            meter.emit(file.path, "download", force=True)
        _check_target(entry, target)
        _place(staging, target, folder=bool(entry.source.local_marker), single=listing.files[0].path)
        _write_record(entry, model_dir, rel, "download", source_label(entry),
                      {f.path: {"size": f.size, "sha256": f.sha256, "git_sha1": f.git_sha1, "md5": f.md5}
                       for f in listing.files}, listing.revision)
        state_path.unlink(missing_ok=True)
    meter.emit(listing.files[-1].path, "done", force=True)
    return DownloadResult(entry.name, "downloaded", str(target), fetched, tuple(f.path for f in listing.files))


def _check_relative(path: str, where: str) -> None:
    """A listed file must stay inside the model's folder (a rogue mirror could list ``../x``)."""
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts or "\\" in path or path.startswith("/"):
        raise ModelError(f"{where} listed a file outside the model folder: {path!r}",
                         fix="check HF_ENDPOINT / the download source")


def _have(staging: Path, file: RemoteFile) -> int:
    for path in (staging / file.path, staging / f"{file.path}.part"):
        if path.is_file():
            return path.stat().st_size
    return 0


def _place(staging: Path, target: Path, *, folder: bool, single: str) -> None:
    """Move a finished staging folder (or, for a one-file model, its file) to ``target`` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        os.rename(staging, target)
    else:
        os.rename(staging / single, target)
        shutil.rmtree(staging, ignore_errors=True)


# ----- install ---------------------------------------------------------------------------------------------

def install(name: str, src: str | os.PathLike, model_dir: str | os.PathLike, *, move: bool = False,
            progress: Progress | None = None, cancel: Cancel = None) -> DownloadResult:
    """Put a model file or folder that is already on disk into the model folder, checked like a download.

    ``src``: a folder in the model's layout (``config.json`` + ``model.safetensors``, TripoSR's
    ``config.yaml`` + ``model.ckpt``, a diffusers folder, ...) or its one weights file (an LRM's weights,
    ``sv3d_p.safetensors``, the rembg ``.onnx``). It is copied to ``.partial/`` and renamed into place
    (``move``: moved instead, a plain rename when on the same file system). InputError: ``src`` is not this
    model; ModelError: a hash or safetensors check failed, or the model is already in the model folder.
    """
    entry = _entry(name)
    model_dir = Path(model_dir).expanduser()
    src = Path(src).expanduser()
    if not src.exists():
        raise InputError(f"{src} does not exist", fix="pass the path of the model's file or folder")
    here = entry.source.local_path(model_dir)
    if here is not None:
        raise ModelError(f"{entry.name} is already in the model folder at {here}",
                         fix=f"remove it first (`orbitmesh models remove {entry.name}` if the manager put it there, "
                             "else delete it)")
    rel, folder, files = check_install_source(entry, src)
    target = model_dir / rel
    _check_target(entry, target)
    partial = check_writable(model_dir)
    key = safe_name(entry.name)
    staging = partial / f"{key}.install"
    same_fs = src.stat().st_dev == partial.stat().st_dev
    total = sum(path.stat().st_size for path, _ in files)
    if not (move and same_fs):
        check_space(model_dir, total, entry.name)
    meter = _Meter(entry.name, progress, cancel, {rel_name: path.stat().st_size for path, rel_name in files})
    with _exclusive(partial / f"{key}.lock", entry.name):
        _check_target(entry, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if move and same_fs and folder and src.is_dir():
            os.rename(src, target)  # one rename: the folder is checked already
        elif move and same_fs and not folder:
            os.rename(files[0][0], target)
        else:
            if staging.exists():
                shutil.rmtree(staging)  # a previous install that stopped: start over
            staging.mkdir(parents=True)
            for path, rel_name in files:
                dest = staging / rel_name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if move and same_fs:  # one file into a new folder (an LRM's weights file)
                    os.rename(path, dest)
                else:
                    _copy(path, dest, meter.reporter(rel_name, "install"))
            try:
                _place(staging, target, folder=folder, single=files[0][1])
            except OSError:
                if move and same_fs:  # put the user's file back before failing
                    for path, rel_name in files:
                        with contextlib.suppress(OSError):
                            os.rename(staging / rel_name, path)
                raise
            if move and not same_fs:  # copied across file systems: now delete the source
                if folder and src.is_dir():
                    shutil.rmtree(src)
                else:
                    files[0][0].unlink()
        for _path, rel_name in files:
            meter.done[rel_name] = meter.sizes[rel_name] or 0
        _write_record(entry, model_dir, rel, "install", str(src),
                      {rel_name: {"size": size} for rel_name, size in meter.sizes.items()})
    meter.emit(files[-1][1], "done", force=True)
    return DownloadResult(entry.name, "installed", str(target), 0, tuple(rel_name for _, rel_name in files))


def _copy(src: Path, dest: Path, report: Callable[[int, int | None], None]) -> None:
    size = src.stat().st_size
    done = 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        report(0, size)
        while chunk := fin.read(1 << 22):
            fout.write(chunk)
            done += len(chunk)
            report(done, size)
    shutil.copystat(src, dest)


# ----- remove ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoveResult:
    name: str
    removed: str | None  # the path deleted (None: nothing of it was placed by the manager)
    freed_bytes: int  # of the model and of any partial download

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def remove(name: str, model_dir: str | os.PathLike) -> RemoveResult:
    """Delete what the model manager placed for ``name`` (and any partial download of it), freeing the space.

    Never anything else: a model put into the model folder by hand or downloaded into a hub cache by a loader
    is a ModelError saying where it is; the built-in and bundled models are refused.
    """
    entry = _entry(name)
    model_dir = Path(model_dir).expanduser()
    managed = _managed_path(entry, model_dir)
    path, location = locate(entry, model_dir)
    if managed is None and path is not None and location in ("model_dir", "hub_cache", "rembg_home"):
        where = {"model_dir": "was put into the model folder by hand",
                 "hub_cache": "was downloaded into a hub cache by a loader",
                 "rembg_home": "is in rembg's own folder"}[location]
        fix = ("`hf cache delete` (or delete that snapshot) if you no longer need it" if location == "hub_cache"
               else "delete it yourself if you no longer need it")
        raise ModelError(f"{entry.name} at {path} {where}, not by the model manager, so it is left alone", fix=fix)
    partial = check_writable(model_dir)
    key = safe_name(entry.name)
    freed = 0
    with _exclusive(partial / f"{key}.lock", entry.name):
        doomed = [p for p in (partial / key, partial / f"{key}.install", partial / f"{key}.json") if p.exists()]
        if managed is not None:
            # Renamed out of the way first: a half-deleted model must never look available.
            trash = partial / f".trash-{key}-{os.getpid()}"
            os.rename(managed, trash)
            doomed.append(trash)
        for p in doomed:
            freed += 0 if p.is_symlink() else _tree_bytes(p)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        (_records(model_dir) / f"{key}.json").unlink(missing_ok=True)
    return RemoveResult(entry.name, str(managed) if managed is not None else None, freed)
