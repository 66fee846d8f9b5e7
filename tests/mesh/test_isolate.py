"""The isolated (forked) child: it dies with its parent, holds none of the parent's sockets or locks, and a
cancel kills it at once (issue 17)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import orbitmesh
from orbitmesh.errors import JobCancelled
from orbitmesh.mesh import isolate
from orbitmesh.mesh.isolate import ChildCrashed, call_isolated, can_fork, cancel_check
from orbitmesh.pipeline.orchestrator import cancel_scope
from orbitmesh.progress import ProgressTracker

LINUX = sys.platform.startswith("linux")
needs_fork = pytest.mark.skipif(not can_fork(), reason="needs fork")
needs_proc = pytest.mark.skipif(not LINUX, reason="reads /proc")

# A server-like parent: a listening socket and an flock'd lock file, then an isolated child that records
# its pid and sleeps 60 s. argv: pid file, lock file, "prctl" or "poll" (the fallback without PDEATHSIG).
PARENT = """
import fcntl, os, socket, sys, time
from orbitmesh.mesh import isolate
pid_file, lock_file, how = sys.argv[1:4]
if how == "poll":
    isolate._PRCTL = None
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
lock = os.open(lock_file, os.O_RDWR | os.O_CREAT)
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
print(srv.getsockname()[1], os.readlink(f"/proc/self/fd/{srv.fileno()}"), flush=True)

def child(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(60)

isolate.call_isolated(child, pid_file, timeout=120)
"""


def _sleeper(pid_file: str, seconds: float) -> str:
    """Runs in the child: records its pid, then sleeps."""
    Path(pid_file + ".tmp").write_text(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(seconds)
    return "slept"


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie left for a non-reaping init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_for(cond, limit: float) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _read_pid(path: Path, limit: float = 60.0) -> int:
    assert _wait_for(path.exists, limit), "the isolated child never started"
    return int(path.read_text())


def _child_fds(pid: int) -> dict[int, str]:
    folder = Path(f"/proc/{pid}/fd")
    return {int(p.name): os.readlink(p) for p in folder.iterdir()}


def _assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):  # not our child any more: it was waited for, no zombie
        os.waitpid(pid, os.WNOHANG)
    assert not Path(f"/proc/{pid}").exists()


@needs_proc
@needs_fork
@pytest.mark.parametrize("how", ["prctl", "poll"])
def test_child_dies_with_a_killed_parent_and_never_holds_its_socket_or_lock(tmp_path, how):
    pid_file, lock_file = tmp_path / "child.pid", tmp_path / ".serve.lock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(orbitmesh.__file__).parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file), str(lock_file), how],
                              stdout=subprocess.PIPE, text=True, env=env)
    child = None
    try:
        port_text, socket_link = parent.stdout.readline().split()
        child = _read_pid(pid_file)
        assert not _gone(child)

        # only stdio and the result pipe: not the listening socket, not the lock file
        fds = _child_fds(child)
        assert socket_link.startswith("socket:[") and socket_link not in fds.values()
        assert str(lock_file) not in fds.values()
        extra = {fd: link for fd, link in fds.items() if fd > 2}
        assert len(extra) == 1 and next(iter(extra.values())).startswith("pipe:"), fds

        parent.kill()  # SIGKILL: no handler, no atexit
        parent.wait(timeout=30)
        assert _wait_for(lambda: _gone(child), 10.0), f"child {child} outlived its SIGKILLed parent ({how})"

        # a restarted server gets the same port and the same lock at once
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", int(port_text)))
            srv.listen()
        fd = os.open(lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)


@needs_proc
@needs_fork
def test_a_cancel_check_that_turns_true_kills_the_child(tmp_path):
    pid_file = tmp_path / "child.pid"
    t0 = time.monotonic()
    with cancel_check(lambda: time.monotonic() - t0 > 0.3), pytest.raises(JobCancelled):
        call_isolated(_sleeper, str(pid_file), 60, timeout=120)
    assert time.monotonic() - t0 < 30  # the 60 s sleep did not finish
    _assert_reaped(_read_pid(pid_file, 0))


@needs_proc
@needs_fork
def test_a_cancel_check_that_raises_kills_the_child_and_propagates(tmp_path):
    pid_file = tmp_path / "child.pid"

    def check() -> bool:
        if pid_file.exists():
            raise JobCancelled("stopped from the check")
        return False

    with cancel_check(check), pytest.raises(JobCancelled, match="stopped from the check"):
        call_isolated(_sleeper, str(pid_file), 60, timeout=120)
    _assert_reaped(int(pid_file.read_text()))


@needs_proc
@needs_fork
def test_the_pipeline_check_follows_a_progress_tracker(tmp_path):
    pid_file = tmp_path / "child.pid"
    tracker = ProgressTracker()
    timer = threading.Timer(0.3, tracker.cancel)  # the server's cancel, from another thread
    timer.start()
    try:
        with cancel_scope(tracker), pytest.raises(JobCancelled):
            call_isolated(_sleeper, str(pid_file), 60, timeout=120)
    finally:
        timer.cancel()
    _assert_reaped(_read_pid(pid_file, 0))
    # a plain callback has no cancel flag: no check, the call runs to its result
    with cancel_scope(lambda *a: None):
        assert call_isolated(sum, [1, 2]) == 3


@needs_fork
def test_cancel_check_is_scoped_to_its_block():
    with cancel_check(lambda: True):
        assert isolate._cancel_check.get() is not None
        with cancel_check(None):  # None switches it off for an inner block
            assert call_isolated(_sleeper_quick) == "slept"
    assert isolate._cancel_check.get() is None
    assert call_isolated(_sleeper_quick) == "slept"


def _sleeper_quick() -> str:
    time.sleep(0.3)
    return "slept"


@needs_proc
@needs_fork
def test_unwrap_uv_lets_a_cancel_through_instead_of_retrying(tmp_path, monkeypatch):
    import numpy as np

    import orbitmesh.mesh.uv as uv

    pid_file = tmp_path / "child.pid"
    monkeypatch.setattr(uv, "run_xatlas", lambda *a: _sleeper(str(pid_file), 60))
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    f = np.array([[0, 1, 2]], np.int32)
    with cancel_check(pid_file.exists), pytest.raises(JobCancelled) as info:
        uv.unwrap_uv(v, f, texture_size=64, isolate=True, timeout=120)
    assert type(info.value) is JobCancelled  # not the "UV unwrapping failed" error after retries
    _assert_reaped(int(pid_file.read_text()))


@needs_proc
@needs_fork
def test_timeout_still_kills_and_reaps_the_child(tmp_path):
    pid_file = tmp_path / "child.pid"
    with pytest.raises(ChildCrashed, match="timed out") as info:
        call_isolated(_sleeper, str(pid_file), 60, timeout=1.0)
    assert info.value.exitcode is None
    _assert_reaped(_read_pid(pid_file, 0))
