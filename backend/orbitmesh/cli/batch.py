"""``orbitmesh batch INPUTS... -o OUT_DIR``: one GLB per image or prompt, models loaded once (docs/batch.md).

INPUTS are image files, folders of images, ``.txt`` prompt lists and ``.csv`` / ``.jsonl`` manifests
(:mod:`orbitmesh.batch.inputs`); the generate settings on the command line are every item's defaults. Each
item's GLB lands in ``OUT_DIR/<name>.glb``, its job folder under ``OUT_DIR/jobs/``, and ``OUT_DIR/batch.json``
records every item (:mod:`orbitmesh.batch.record`); running the same command again keeps the items already
done. Progress: one bar over the items on a terminal (a line per finished item when stderr is piped), or
``--progress jsonl``: one JSON object per line on stdout, the item events of :func:`orbitmesh.batch.run_batch`
and a last ``{"event": "summary", ...}``. Then a table (name, status, seconds, worker, error) on stdout, or with
``--json`` the summary as one JSON line. Exit code: 0 every item done, 1 some failed, 2 bad input (nothing
ran), 130 Ctrl-C / 143 SIGTERM (running items cancelled, batch.json consistent; run again to resume).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from orbitmesh.cli.common import add_request_args, add_settings_args, request_settings_from_args, settings_from_args
from orbitmesh.cli.console import BAR_FORMAT
from orbitmesh.cli.generate import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated
from orbitmesh.errors import InputError, OrbitMeshError
from orbitmesh.jobs import MAX_ATTEMPTS

if TYPE_CHECKING:
    from orbitmesh.batch import BatchSummary

EXIT_FAILED = 1  # the batch ran, some items failed


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("batch", help="many images/prompts -> one GLB each in a folder (models loaded once)",
                            description="Generate a GLB for every image, folder of images, prompt list (.txt, one a "
                                        "line) or manifest (.csv/.jsonl: image or prompt plus settings per row) "
                                        "into OUT_DIR; batch.json records every item; running the same command "
                                        "again keeps the items already done. See docs/batch.md.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders of images, a .txt file of prompts or a .csv/.jsonl manifest")
    parser.add_argument("-o", "--output", dest="out_dir", metavar="OUT_DIR", required=True,
                        help="folder for the GLBs (<name>.glb), batch.json and the job folders (jobs/)")
    add_request_args(parser)
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run on a Ray pool: 'local' (workers on this machine), 'auto' or a cluster address "
                             '(needs pip install "orbitmesh[ray]"); default: this process')
    parser.add_argument("--workers", type=int, metavar="N",
                        help="Ray workers (default: one per GPU, or 2 on CPU); each loads the models once")
    parser.add_argument("--retries", type=int, default=MAX_ATTEMPTS - 1, metavar="N",
                        help=f"runs again an item whose worker died, at most N times (default {MAX_ATTEMPTS - 1})")
    parser.add_argument("--progress", choices=("bar", "jsonl"), default="bar",
                        help="a bar over the items on stderr, or one JSON object per event on stdout")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line, not a table")
    add_settings_args(parser)
    # Job folders go under OUT_DIR/jobs: the shared --output-dir does not apply (refused in run, hidden here).
    parser._option_string_actions["--output-dir"].help = argparse.SUPPRESS
    parser.set_defaults(func=run)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


class BatchDisplay:
    """The ``on_event`` of :func:`orbitmesh.batch.run_batch` for the terminal: a tqdm bar over the items (done /
    total, ETA, the running items' stages) on a terminal, a line per finished item otherwise; JSON lines on stdout
    with ``jsonl``. Call :meth:`close` when the batch ends."""

    def __init__(self, *, jsonl: bool, stream: IO[str] | None = None, live: bool | None = None) -> None:
        self.jsonl = jsonl
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.bar: Any = None
        self.total = 0
        self.ended = 0
        self.started = False  # the batch event came: batch.json describes this run
        self.running: dict[str, str] = {}  # name -> "stage NN%"
        self._lock = threading.Lock()  # close() runs on the main thread, events on the workers'

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            kind = event["event"]
            if kind == "batch":
                self.started, self.total, self.ended = True, event["total"], event["skipped"]
            if self.jsonl:
                _emit(event)
            elif kind == "batch":
                self._begin(event)
            elif kind in ("started", "progress"):
                self.running[event["name"]] = f"{event.get('stage') or 'starting'} {event['progress']:.0%}"
                self._refresh()
            elif kind in ("done", "failed", "cancelled"):
                self.running.pop(event["name"], None)
                self.ended += 1
                self._finished(event)
            elif kind == "stopping":
                self._say(f"stopping: cancelling {', '.join(event['running'])} at the next progress step "
                          "(Ctrl-C again to stop without waiting)")
            elif kind == "retry":
                self._say(f"{event['name']}: the worker died ({event['error']['message']}); running it again")

    def close(self) -> None:
        with self._lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def _begin(self, event: dict[str, Any]) -> None:
        kept = f" ({event['skipped']} done in an earlier run, kept)" if event["skipped"] else ""
        if self.live:
            from tqdm import tqdm

            self.bar = tqdm(total=event["total"], initial=event["skipped"], desc="batch", unit="item",
                            file=self.stream, leave=True, bar_format=BAR_FORMAT, dynamic_ncols=True)
            if kept:
                self.bar.write(f"{event['total']} items{kept}", file=self.stream)
        else:
            self._say(f"batch: {event['total']} items{kept} -> {event['out_dir']}")

    def _finished(self, event: dict[str, Any]) -> None:
        seconds = f" in {event['seconds']:.1f} s" if event.get("seconds") is not None else ""
        error = event.get("error") or {}
        line = f"[{self.ended}/{self.total}] {event['name']}: {event['status']}{seconds}"
        if event["status"] == "failed":
            line += f": {error.get('message')}"
        if self.bar is not None:
            self.bar.update(1)
            if event["status"] != "done":  # failures stay on screen above the bar
                self.bar.write(line, file=self.stream)
            self._refresh()
        else:
            self._say(line)

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(f"{n}: {s}" for n, s in self.running.items())[:80])

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


def format_table(summary: BatchSummary) -> str:
    """The end-of-batch table: name, status, seconds, worker, error (and its fix); then one line of counts."""
    rows = [("name", "status", "seconds", "worker", "error")]
    for item in summary.items:
        error = item.get("error") or {}
        text = error.get("message") or "-"
        if error.get("fix"):
            text += f" (fix: {error['fix']})"
        status = "skipped" if item.get("name") in summary.kept else item.get("status", "?")
        seconds = f"{item['seconds']:.1f}" if isinstance(item.get("seconds"), (int, float)) else "-"
        rows.append((str(item.get("name")), status, seconds, item.get("worker") or "-", text))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                        row[3].ljust(widths[3]), row[4]]).rstrip() for row in rows]
    kept = f" ({summary.skipped} skipped: done in an earlier run)" if summary.skipped else ""
    lines.append(f"{summary.total} items: {summary.done} done{kept}, {summary.failed} failed, "
                 f"{summary.cancelled} cancelled in {summary.seconds:.1f} s -> {summary.out_dir} (batch.json)")
    return "\n".join(lines)


def _report(summary: BatchSummary, args: argparse.Namespace, stopped: str | None = None) -> None:
    data = {**summary.to_dict(), "stopped": stopped}
    if args.progress == "jsonl":
        _emit({"event": "summary", **data})
    elif args.json:
        _emit(data)
    else:
        print(format_table(summary), flush=True)


def run(args: argparse.Namespace) -> int:
    from orbitmesh.batch import read_summary, run_batch

    jsonl = args.progress == "jsonl"
    display = BatchDisplay(jsonl=jsonl)
    terminated: list[bool] = []  # set by the SIGTERM handler

    def on_sigterm(signum: int, frame: object) -> None:
        if not terminated:  # once: a second SIGTERM must not break the cleanup of the first
            terminated.append(True)
            raise Terminated("terminated (SIGTERM)")

    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if on_main else None
    try:
        if args.output_dir is not None:
            raise InputError("--output-dir does not apply to batch: job folders go under OUT_DIR/jobs",
                             fix="leave out --output-dir (choose the folder with -o)")
        summary = run_batch(args.inputs, args.out_dir, request_settings_from_args(args),
                            settings=settings_from_args(args), ray=args.ray, workers=args.workers,
                            retries=args.retries, on_event=display)
    except KeyboardInterrupt as exc:
        display.close()
        term = bool(terminated) or isinstance(exc, Terminated)
        why = "terminated (SIGTERM)" if term else "interrupted (Ctrl-C)"
        summary = read_summary(Path(args.out_dir).expanduser().absolute()) if display.started else None
        print(f"{why}: batch stopped; running the same command again keeps the items done", file=sys.stderr)
        if summary is not None:
            _report(summary, args, stopped=why)
        elif jsonl:
            _emit({"event": "cancelled"})
        return EXIT_TERMINATED if term else EXIT_INTERRUPTED
    except OrbitMeshError as exc:
        if not jsonl:
            raise
        _emit({"event": "error", "message": exc.message, "fix": exc.fix})
        return 2
    finally:
        display.close()
        if on_main:
            signal.signal(signal.SIGTERM, previous)
    _report(summary, args)
    return 0 if summary.ok else EXIT_FAILED
