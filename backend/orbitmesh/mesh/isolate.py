"""Run a function in a forked child so a segfault (or a hang) in native code cannot take the
process down: it becomes an exception here instead."""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import traceback
import warnings
from typing import Any, Callable


class ChildCrashed(RuntimeError):
    """The child died from a signal, or exited without a result."""

    def __init__(self, message: str, exitcode: int | None) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def can_fork() -> bool:
    return "fork" in mp.get_all_start_methods()


def _child(conn, fn, args, kwargs) -> None:
    faulthandler.disable()  # a crash is reported by the parent; no inherited traceback dump
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as exc:  # report any Python error to the parent
        conn.send(("error", (type(exc).__name__, str(exc), traceback.format_exc())))
    finally:
        conn.close()


def call_isolated(fn: Callable[..., Any], *args, timeout: float = 120.0, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` in a forked child; returns its result.

    Raises ChildCrashed when the child dies or runs past ``timeout`` seconds, and
    RuntimeError carrying the child's traceback when ``fn`` raised.
    """
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, kwargs), daemon=True)
    with warnings.catch_warnings():  # 3.12+ warns about fork in threaded processes; the child only runs fn
        warnings.simplefilter("ignore", DeprecationWarning)
        proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            proc.join()
            raise ChildCrashed(f"timed out after {timeout:.0f} s", None)
        try:
            status, payload = recv.recv()
        except EOFError:
            proc.join()
            raise ChildCrashed(f"died with exit code {proc.exitcode}", proc.exitcode) from None
    finally:
        recv.close()
    proc.join()
    if status == "error":
        name, msg, tb = payload
        raise RuntimeError(f"{name}: {msg}\n{tb}")
    return payload
