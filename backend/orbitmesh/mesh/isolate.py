"""Run a function in a forked child so a segfault (or a hang) in native code cannot take the
process down: it becomes an exception here instead.

The child is tied to its parent, so a ``kill -9`` of a server never leaves it behind holding the
server's port or its ``.serve.lock``:

- it dies with the parent. Linux: ``PR_SET_PDEATHSIG=SIGKILL`` right after the fork, then a check
  that the parent did not die before that call (``os.getppid()`` against the pid taken before the
  fork). The signal fires when the *thread* that forked exits, not the process; that is right here,
  because that thread waits in :func:`call_isolated` until the child is reaped. Other platforms that
  fork (macOS) have no PDEATHSIG: a daemon thread in the child polls ``os.getppid()`` every
  ``ORPHAN_POLL_S`` seconds. Best effort: that thread needs the GIL, so a long native call that holds
  it delays the exit until it returns. Windows cannot fork; callers run in-process there
  (:func:`can_fork` is False).
- it closes every inherited file descriptor except 0/1/2 and its result pipe before anything else,
  so it never holds a listening socket or a ``flock``.
- a cancel stops it at once: inside ``with cancel_check(fn):`` :func:`call_isolated` asks ``fn()``
  every ``POLL_S`` seconds while it waits, and kills the child when the job was cancelled.
"""

from __future__ import annotations

import contextvars
import ctypes
import faulthandler
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from orbitmesh.errors import JobCancelled, OrbitMeshError

POLL_S = 0.1  # how often the parent asks the cancel check while the child runs
ORPHAN_POLL_S = 0.5  # how often the child checks its parent where there is no PDEATHSIG
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# () -> True when the job was cancelled (or raises JobCancelled). A context variable: it does not
# cross threads, so install it in the thread that calls call_isolated (the pipeline's thread).
_cancel_check: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "orbitmesh_cancel_check", default=None)


class ChildCrashed(RuntimeError):
    """The child died from a signal, or exited without a result."""

    def __init__(self, message: str, exitcode: int | None) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def can_fork() -> bool:
    return hasattr(os, "fork") and "fork" in mp.get_all_start_methods()


@contextmanager
def cancel_check(fn: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, :func:`call_isolated` (in this thread) kills its child and raises JobCancelled
    as soon as ``fn()`` returns True; an exception from ``fn`` kills the child and propagates.
    ``fn=None`` removes any check for the block."""
    token = _cancel_check.set(fn)
    try:
        yield
    finally:
        _cancel_check.reset(token)


def _libc_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the parent (never in the child: find_library may run ldconfig)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # libc is loaded in every CPython on Linux
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def _set_pdeathsig() -> bool:
    """Linux: SIGKILL this process when the thread that forked it exits. False where unavailable."""
    return _PRCTL is not None and _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0


def _watch_parent(parent: int) -> None:
    """The portable fallback: a daemon thread that ends this process when it is reparented."""
    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_S)
        os._exit(1)

    threading.Thread(target=poll, name="orbitmesh-orphan-watch", daemon=True).start()


def _fd_limit() -> int:
    """One more than the highest open descriptor (from /proc/self/fd or /dev/fd), else the fd limit."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(int(name) for name in os.listdir(folder)) + 1
        except (OSError, ValueError):
            continue
    try:
        return max(os.sysconf("SC_OPEN_MAX"), 256)
    except (AttributeError, ValueError, OSError):
        return 65536


def _close_inherited_fds(keep: int) -> None:
    """Close every descriptor above 2 except ``keep``: the parent's sockets, lock files, pipes."""
    os.closerange(3, keep)
    os.closerange(keep + 1, max(_fd_limit(), keep + 1))


def _child(send_fd: int, parent: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """The forked child: never returns, never runs the parent's atexit handlers or finalizers."""
    code = 1
    try:
        if not _set_pdeathsig():
            _watch_parent(parent)
        if os.getppid() != parent:  # the parent died before prctl: nobody waits for the result
            os._exit(1)
        _close_inherited_fds(send_fd)
        faulthandler.disable()  # a crash is reported by the parent; no inherited traceback dump
        conn = mpc.Connection(send_fd, readable=False)
        try:
            conn.send(("ok", fn(*args, **kwargs)))
        except BaseException as exc:  # report any Python error to the parent
            conn.send(("error", (type(exc).__name__, str(exc), traceback.format_exc())))
        code = 0
    finally:
        os._exit(code)


def _reap(pid: int, *, kill: bool) -> int:
    """Wait for the child (SIGKILL it first when ``kill``); returns its exit code, -N for signal N."""
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except InterruptedError:
            continue
        except ChildProcessError:  # already reaped (someone waited on all children)
            return -signal.SIGKILL if kill else 1


def call_isolated(fn: Callable[..., Any], *args, timeout: float = 120.0, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` in a forked child; returns its result (which must pickle).

    Raises ChildCrashed when the child dies or runs past ``timeout`` seconds, RuntimeError carrying
    the child's traceback when ``fn`` raised, and JobCancelled when the :func:`cancel_check` of this
    context says the job was cancelled. The child is always reaped before this returns or raises.
    """
    if not hasattr(os, "fork"):
        raise OrbitMeshError("this platform cannot fork, so native code cannot run isolated",
                             fix="call with isolate=False (it runs in-process)")
    check = _cancel_check.get()
    recv, send = mp.Pipe(duplex=False)
    parent = os.getpid()
    with warnings.catch_warnings():  # 3.12+ warns about fork in threaded processes; the child only runs fn
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: _child ends in os._exit
        _child(send.fileno(), parent, fn, args, kwargs)
    send.close()
    reaped = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _reap(pid, kill=True)
                reaped = True
                raise ChildCrashed(f"timed out after {timeout:.0f} s", None)
            if recv.poll(min(POLL_S, left) if check is not None else left):
                break
            if check is not None and check():
                _reap(pid, kill=True)
                reaped = True
                raise JobCancelled()
        try:
            status, payload = recv.recv()
        except EOFError:
            code = _reap(pid, kill=False)
            reaped = True
            raise ChildCrashed(f"died with exit code {code}", code) from None
        _reap(pid, kill=False)
        reaped = True
    finally:
        recv.close()
        if not reaped:  # the check raised, or an interrupt: never leave the child running
            _reap(pid, kill=True)
    if status == "error":
        name, msg, tb = payload
        raise RuntimeError(f"{name}: {msg}\n{tb}")
    return payload
