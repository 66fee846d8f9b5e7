"""``orbitmesh models list|download|install|remove|path``: the model manager (:mod:`orbitmesh.models.manager`).

``list [--json]`` shows every model of every kind with its licence, whether it allows commercial use, its
size and whether it is here; ``download NAME... [--yes]`` asks for the licence, then fetches into the model
folder (resumable, verified, moved into place when complete); ``install NAME PATH [--move]`` takes a copy
already on disk; ``remove NAME [--yes]`` deletes what the manager placed; ``path NAME`` prints where a model
is (exit 1 when it is not here). Every action takes ``--model-dir`` and ``--config``. Nothing heavy is
imported to build the parser.

For programs (the Blender add-on's In-Blender backend runs these in a child process):

- ``download NAME... --yes --progress jsonl``: only JSON lines on stdout (the licence notice goes to stderr):
  ``{"event": "progress", "name", "file", "done_bytes", "total_bytes", "phase", ...}`` per progress update,
  then per model ``{"event": "done", "name", "status", "path", "bytes_fetched", "files"}``; on an error
  ``{"event": "failed", "name", "message", "fix"}`` (exit 2); Ctrl-C or SIGTERM ``{"event": "cancelled",
  "name", "message"}`` (exit 130 / 143). An interrupted download always keeps its partial data and resumes.
- ``remove NAME --yes --json``: one line ``{"name", "removed": bool, "freed_bytes"}`` (the server's answer);
  an error adds ``"error": {"message", "fix"}`` (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from typing import Any, Iterator

ACTIONS = ("list", "download", "install", "remove", "path")
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM (as `orbitmesh generate`)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, to unwind a download exactly as Ctrl-C does (partial data kept)."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config TOML (default: $ORBITMESH_CONFIG or the user config dir)")
    parser.add_argument("--model-dir", help="the model folder (default: model_dir of the config, "
                                            "$ORBITMESH_MODEL_DIR, else the user data dir)")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list, download, install and remove models in the model folder",
                            description="The model manager: every model OrbitMesh knows (reconstruction, SV3D, "
                                        "text-to-image, background removal), its licence and whether it is here; "
                                        "downloads resume after an interruption and are verified before they "
                                        "are moved into the model folder.")
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))

    p = actions.add_parser("list", help="every model of every kind: licence, commercial use, size, available")
    p.add_argument("--json", action="store_true", help="print one JSON line (a list of objects) instead of a table")
    p.add_argument("--kind", choices=("lrm", "video", "text_to_image", "background_removal"),
                   help="only models of this kind")
    _common(p)
    p.set_defaults(func=run_list)

    p = actions.add_parser("download", help="download models into the model folder (licence asked first)")
    p.add_argument("names", nargs="+", metavar="NAME", help="model name(s) as `orbitmesh models list` shows them")
    p.add_argument("--yes", "-y", action="store_true", help="accept the licence(s) without asking (needed when "
                                                            "stdin is not a terminal)")
    p.add_argument("--progress", choices=("bar", "jsonl"), default="bar",
                   help="a progress bar/lines on stderr, or JSON lines on stdout (progress, done, failed, "
                        "cancelled events; for programs)")
    _common(p)
    p.set_defaults(func=run_download)

    p = actions.add_parser("install", help="put a model file or folder already on disk into the model folder")
    p.add_argument("name", metavar="NAME", help="model name")
    p.add_argument("path", metavar="PATH", help="its folder (e.g. config.json + model.safetensors) or weights file")
    p.add_argument("--move", action="store_true", help="move it instead of copying")
    _common(p)
    p.set_defaults(func=run_install)

    p = actions.add_parser("remove", help="delete a model the manager placed (and any partial download of it)")
    p.add_argument("name", metavar="NAME", help="model name")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--json", action="store_true", help='print one JSON line {"name", "removed", "freed_bytes"}')
    _common(p)
    p.set_defaults(func=run_remove)

    p = actions.add_parser("path", help="print where a model is (exit 1 when it is not here)")
    p.add_argument("name", metavar="NAME", help="model name")
    _common(p)
    p.set_defaults(func=run_path)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


@contextlib.contextmanager
def _naming_the_folder(model_dir) -> Iterator[None]:
    """A DiskError does not name the folder (servers send it to clients): the command line says which."""
    from orbitmesh.errors import DiskError

    try:
        yield
    except DiskError:
        print(f"model folder: {model_dir}", file=sys.stderr)
        raise


def _model_dir(args: argparse.Namespace):
    from orbitmesh.settings import load_settings

    return load_settings(getattr(args, "config", None), model_dir=getattr(args, "model_dir", None)).model_dir


# ----- list ----------------------------------------------------------------------------------------------

WHERE = {"model_dir": "model folder", "hub_cache": "hub cache", "bundled": "bundled", "builtin": "built in",
         "rembg_home": "rembg folder"}


def _notes(row: dict[str, Any]) -> str:
    notes = []
    if row["plumbing"]:
        notes.append("plumbing check, not a model")
    if row["default"]:
        notes.append("default")
    if row["gated"]:
        notes.append("gated")
    if row["partial_bytes"]:
        notes.append(f"partial download {row['partial_bytes'] / 1e6:.0f} MB")
    return ", ".join(notes)


def run_list(args: argparse.Namespace) -> int:
    from orbitmesh.models import manager

    model_dir = _model_dir(args)
    rows = manager.models_json(model_dir, args.kind)
    if args.json:
        print(json.dumps(rows))
        return 0
    header = ("NAME", "KIND", "SIZE", "AVAILABLE", "COMMERCIAL", "LICENCE", "NOTES")
    table = [header] + [(r["name"], r["kind_label"], f"{r['size_gb']:.2f} GB" if r["size_gb"] else "-",
                         f"yes ({WHERE.get(r['location'], r['location'])})" if r["available"] else "no",
                         r["commercial"], r["licence"].split(" (")[0], _notes(r)) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    print(f"\nmodel folder: {model_dir}")
    conditions = {r["condition"] for r in rows if r["condition"]}
    for condition in sorted(conditions):
        names = ", ".join(r["name"] for r in rows if r["condition"] == condition)
        print(f"conditional ({names}): {condition}")
    print("download one with `orbitmesh models download NAME`; `orbitmesh models list --json` for paths and sources")
    return 0


# ----- progress --------------------------------------------------------------------------------------------

class ByteProgress:
    """A download/copy progress display on stderr: a tqdm bar on a terminal, a line every few seconds
    otherwise (logs, pipes)."""

    LINE_INTERVAL_S = 2.0

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.bar: Any = None
        self.last_line = float("-inf")

    def __call__(self, event: dict[str, Any]) -> None:
        done, total = event["done_bytes"], event["total_bytes"]
        if self.live:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=total, desc=event["name"], unit="B", unit_scale=True, unit_divisor=1024,
                                file=self.stream, leave=True)
            if total is not None and self.bar.total != total:
                self.bar.total = total
            self.bar.set_postfix_str(f"{event.get('phase', '')} {event['file']}"[:50], refresh=False)
            self.bar.update(done - self.bar.n)
        elif time.monotonic() - self.last_line >= self.LINE_INTERVAL_S or event.get("phase") == "done":
            of = f" of {total / 1e6:.1f}" if total else ""
            print(f"[{event.get('phase', 'download')}] {event['name']}: {done / 1e6:.1f}{of} MB ({event['file']})",
                  file=self.stream, flush=True)
            self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----- download / install / remove / path --------------------------------------------------------------------

def _ask(question: str, *, yes: bool, refused: str) -> bool:
    """y/N on the terminal; --yes accepts; no terminal without --yes: LicenceNotAccepted (exit 2)."""
    from orbitmesh.models.manager import LicenceNotAccepted

    if yes:
        return True
    if not sys.stdin.isatty():
        raise LicenceNotAccepted(f"stdin is not a terminal, so {refused} cannot be confirmed: nothing was done",
                                 fix="pass --yes to accept")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout (--progress jsonl, --json)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def _sigterm_as_interrupt(terminated: list[bool]) -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so a terminated download unwinds
    as Ctrl-C does: the bytes written so far stay in ``.partial`` and the next download resumes from them."""

    def on_sigterm(signum: int, frame: object) -> None:
        if not terminated:  # once: a second SIGTERM must not break the unwinding of the first
            terminated.append(True)
            raise Terminated("terminated (SIGTERM)")

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (main() called from a thread): SIGTERM keeps its default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kept_message(name: str, model_dir) -> str:
    from orbitmesh.models import manager

    return (f"the partial download is kept in {model_dir / manager.PARTIAL_DIR} and resumes with "
            f"`orbitmesh models download {name}`")


def run_download(args: argparse.Namespace) -> int:
    if args.progress == "jsonl":
        return _download_jsonl(args)
    from orbitmesh.models import manager

    model_dir = _model_dir(args)
    plans = [manager.plan(name, model_dir) for name in dict.fromkeys(args.names)]  # every name checked first
    terminated: list[bool] = []
    with _sigterm_as_interrupt(terminated):
        for the_plan in plans:
            if the_plan.available:
                print(f"{the_plan.name} is already available: {the_plan.path}")
                continue
            print(the_plan.notice())

            def confirm(p: manager.DownloadPlan) -> bool:
                return _ask(f"Accept the licence ({p.licence}) and download {p.name}?", yes=args.yes,
                            refused=f"the licence of {p.name} ({p.licence})")

            bar = ByteProgress()
            try:
                with _naming_the_folder(model_dir):
                    result = manager.download(the_plan.name, model_dir, progress=bar, confirm=confirm)
            except KeyboardInterrupt:
                bar.close()
                print(f"{'terminated' if terminated else 'interrupted'}: {_kept_message(the_plan.name, model_dir)}",
                      file=sys.stderr)
                if terminated:
                    return EXIT_TERMINATED
                raise
            finally:
                bar.close()
            print(f"{result.name}: {result.status} -> {result.path}")
    return 0


def _download_jsonl(args: argparse.Namespace) -> int:
    """``download --progress jsonl``: JSON lines only on stdout (see the module docstring), every error an event."""
    from orbitmesh.errors import DiskError, OrbitMeshError
    from orbitmesh.models import manager

    name: str | None = args.names[0]
    model_dir = None
    terminated: list[bool] = []

    def progress(event: dict[str, Any]) -> None:
        _emit({"event": "progress", **event})

    def confirm(p: manager.DownloadPlan) -> bool:  # no prompt: stdout carries only JSON
        if not args.yes:
            raise manager.LicenceNotAccepted(f"the licence of {p.name} ({p.licence}) cannot be confirmed with "
                                             "--progress jsonl: nothing was downloaded",
                                             fix="show the licence to the user, then pass --yes")
        return True

    with _sigterm_as_interrupt(terminated):
        try:
            model_dir = _model_dir(args)
            plans = [manager.plan(n, model_dir) for n in dict.fromkeys(args.names)]  # every name checked first
            for the_plan in plans:
                name = the_plan.name
                if not the_plan.available:
                    print(the_plan.notice(), file=sys.stderr, flush=True)
                result = manager.download(name, model_dir, progress=progress, confirm=confirm)
                _emit({"event": "done", **result.to_dict()})
        except KeyboardInterrupt as exc:
            stopped = "terminated" if terminated or isinstance(exc, Terminated) else "interrupted"
            kept = _kept_message(str(name), model_dir) if model_dir is not None else "nothing was downloaded"
            _emit({"event": "cancelled", "name": name, "message": f"the download of {name} was {stopped}: {kept}"})
            print(f"{stopped}: {kept}", file=sys.stderr)
            return EXIT_TERMINATED if stopped == "terminated" else EXIT_INTERRUPTED
        except OrbitMeshError as exc:
            if isinstance(exc, DiskError) and model_dir is not None:
                print(f"model folder: {model_dir}", file=sys.stderr)
            print(f"error: {exc.message}" + (f"\nfix: {exc.fix}" if exc.fix else ""), file=sys.stderr)
            _emit({"event": "failed", "name": name, "message": exc.message, "fix": exc.fix})
            return 2
    return 0


def run_install(args: argparse.Namespace) -> int:
    from orbitmesh.models import catalogue, manager

    model_dir = _model_dir(args)
    entry = catalogue.get(args.name)
    print(f"{entry.licence_notice()} Commercial use: {entry.commercial}"
          + (f" ({entry.condition})" if entry.condition else "") + ".")
    bar = ByteProgress()
    try:
        with _naming_the_folder(model_dir):
            result = manager.install(args.name, args.path, model_dir, move=args.move, progress=bar)
    finally:
        bar.close()
    print(f"{result.name}: {result.status} -> {result.path}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from orbitmesh.errors import OrbitMeshError

    if not args.json:
        return _remove(args)
    try:
        return _remove(args)
    except OrbitMeshError as exc:
        print(f"error: {exc.message}" + (f"\nfix: {exc.fix}" if exc.fix else ""), file=sys.stderr)
        _emit({"name": args.name, "removed": False, "freed_bytes": 0,
               "error": {"message": exc.message, "fix": exc.fix}})
        return 2


def _remove(args: argparse.Namespace) -> int:
    from orbitmesh.models import manager

    model_dir = _model_dir(args)
    row = manager.model_row(manager.catalogue.get(args.name), model_dir)
    if row.managed or row.partial_bytes:
        what = row.path if row.managed else f"a partial download ({row.partial_bytes / 1e6:.0f} MB)"
        if not _ask(f"Delete {args.name} ({what})?", yes=args.yes, refused=f"removing {args.name}"):
            if args.json:
                _emit({"name": row.name, "removed": False, "freed_bytes": 0})
            else:
                print("nothing was removed")
            return 1
    with _naming_the_folder(model_dir):
        result = manager.remove(args.name, model_dir)
    if args.json:  # the server's answer to POST /models/{name}/remove
        _emit({"name": result.name, "removed": result.removed is not None, "freed_bytes": result.freed_bytes})
        return 0
    if result.removed is None and not result.freed_bytes:
        print(f"{args.name} is not installed by the model manager in {model_dir}: nothing to remove", file=sys.stderr)
        return 1
    print(f"{args.name}: removed {result.removed or 'its partial download'} ({result.freed_bytes / 1e6:.1f} MB freed)")
    return 0


def run_path(args: argparse.Namespace) -> int:
    from orbitmesh.models import catalogue, manager

    model_dir = _model_dir(args)
    entry = catalogue.get(args.name)
    path = manager.model_path(args.name, model_dir)
    if path is None:
        why = "is built in (made from code): it has no files" if entry.source.builtin else "is not installed"
        print(f"{args.name} {why}", file=sys.stderr)
        if not entry.source.builtin:
            print(f"fix: {entry.how_to_get(model_dir)}", file=sys.stderr)
        return 1
    print(path)
    return 0
