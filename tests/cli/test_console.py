"""Terminal progress: a live bar per stage on a (pseudo-)terminal, throttled lines when stderr is piped."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

from orbitmesh.cli import console
from orbitmesh.cli.console import ConsoleProgress
from orbitmesh.pipeline import modes
from orbitmesh.progress import ProgressEvent

EXAMPLE = "backend/orbitmesh/weights/orbitmesh-preview/example.png"


def _event(stage: str, step: int, total: int) -> ProgressEvent:
    return ProgressEvent(stage, step, total, f"step {step}", 0.0)


def test_a_pseudo_terminal_shows_one_bar_per_stage_ending_at_100_percent(tmp_path, repo_root):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a sized terminal, as a user's
    cmd = [sys.executable, "-m", "orbitmesh", "generate", str(repo_root / EXAMPLE), "--model", "tiny-random",
           "--mc-resolution", "48", "--target-faces", "600", "--texture-size", "128", "--device", "cpu",
           "--output-dir", str(tmp_path / "jobs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ORBITMESH_CONFIG": str(tmp_path / "none.toml")}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0
    screen = out.decode("utf-8", errors="replace")
    finished = [line.rsplit("\r", 1)[-1] for line in screen.split("\r\n")]  # what each bar shows at its end
    for stage in modes.stage_names("fast"):
        end = [line for line in finished if line.startswith(stage)]
        assert len(end) == 1, (stage, finished)
        assert "100%" in end[0] and "done in" in end[0], end[0]
    assert screen.count("\r") > 2 * len(finished)  # bars redrawn in place, not one line per step


def test_piped_output_is_at_most_one_line_per_stage_per_second(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    show = ConsoleProgress(out, live=False)
    for step in range(1, 201):  # 200 steps in 0.2 s: one progress line, then the closing line
        clock[0] += 0.001
        show(_event("grid_query", step, 200))
    for step in range(1, 51):  # 50 steps over 5 s
        clock[0] += 0.1
        show(_event("mesh", step, 50))
    show.close()
    lines = out.getvalue().splitlines()
    grid = [ln for ln in lines if ln.startswith("[grid_query]")]
    mesh = [ln for ln in lines if ln.startswith("[mesh]")]
    assert len(grid) == 2 and grid[-1] == "[grid_query] done in 0.3 s"  # it ends when mesh starts
    assert 5 <= len(mesh) <= 5 + 1 and mesh[-1].startswith("[mesh] done in 4.9")  # first event at t=0.1


def test_a_failed_job_leaves_its_bar_where_it_stopped():
    out = io.StringIO()
    show = ConsoleProgress(out, live=False)
    show(_event("lrm", 1, 4))
    show.close(completed=False)
    assert "done in" not in out.getvalue()
    show.close()  # twice is harmless
