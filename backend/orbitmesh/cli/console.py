"""Progress on the terminal: one live tqdm bar per stage, or throttled plain lines when stderr is piped.

On a terminal each stage gets a bar (step/total, rate, ETA) that ends at 100 % with the stage's
time when the next stage starts or the job ends. When stderr is not a terminal (a log file, CI,
a pipe) a stage prints at most one line per second plus a closing line with its time, instead of
one line per step (a 256^3 grid query reports dozens of chunks).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from orbitmesh.progress import ProgressEvent

LINE_INTERVAL_S = 1.0
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]{postfix}"


class ConsoleProgress:
    """A :class:`~orbitmesh.progress.ProgressTracker` listener; call :meth:`close` when the job ends."""

    def __init__(self, stream: IO[str] | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.stage: str | None = None
        self.started = 0.0
        self.last_line = 0.0
        self.bar: Any = None
        self.latest: ProgressEvent | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage != self.stage:
            self._end_stage()
            self.stage, self.started, self.last_line = event.stage, time.monotonic(), float("-inf")
        self.latest = event
        if self.live:
            self._draw(event)
        elif time.monotonic() - self.last_line >= LINE_INTERVAL_S and event.step > 0:
            self._line(event)

    def close(self, *, completed: bool = True) -> None:
        """End the current stage: its bar at 100 % (or left where it stopped when the job did not complete)
        and its time; safe to call twice."""
        self._end_stage(completed)
        self.stage = None

    # -- a live bar --------------------------------------------------------------------------

    def _draw(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        total = max(event.total, 1)
        if self.bar is None:
            columns, rows = self._size()
            self.bar = tqdm(total=total, desc=f"{event.stage:<13}", unit="step", file=self.stream, leave=True,
                            ncols=columns, nrows=rows, bar_format=BAR_FORMAT)
        if self.bar.total != total:  # a stage may announce its step count after a first 0/1 event
            self.bar.reset(total=total)
        self.bar.set_postfix_str(event.message[:60], refresh=False)
        self.bar.update(min(event.step, total) - self.bar.n)

    def _size(self) -> tuple[int, int]:
        """The terminal's (columns, rows); a pseudo-terminal nobody sized reports 0 x 0, which would make
        tqdm hide every bar: then 100 x 24."""
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (OSError, ValueError, AttributeError):
            return 100, 24
        return size.columns or 100, size.lines or 24

    # -- plain lines ---------------------------------------------------------------------------

    def _line(self, event: ProgressEvent, *, done: float | None = None) -> None:
        if done is not None:
            text = f"[{event.stage}] done in {done:.1f} s"
        else:
            total = f"/{event.total}" if event.total > 1 else ""
            eta = f" eta {event.eta_s:.0f}s" if event.eta_s is not None and event.eta_s >= 1 else ""
            text = f"[{event.stage}] {event.step}{total} {event.message}{eta}"
        print(text, file=self.stream, flush=True)
        self.last_line = time.monotonic()

    def _end_stage(self, completed: bool = True) -> None:
        if self.stage is None or self.latest is None:
            return
        seconds = time.monotonic() - self.started
        if self.bar is not None:
            if completed:
                self.bar.set_postfix_str(f"done in {seconds:.1f} s", refresh=False)
                self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
            self.bar = None
        elif not self.live and completed:
            self._line(self.latest, done=seconds)
