"""What every operator module shares: the panel state, error reports, redraws, background work.

Worker threads never touch bpy: :func:`in_background_thread` hands their result back to Blender's
main thread through a timer.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Callable

import bpy

from .core.errors import AddonError, report_text


def state(context):
    """The window manager's OrbitMeshState (what the panel shows; not saved)."""
    return context.window_manager.orbitmesh_state


def redraw(context) -> None:
    for window in context.window_manager.windows:
        screen = window.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def show_error(context, message: str, fix: str | None) -> None:
    st = state(context)
    st.error, st.error_fix = message, fix or ""
    redraw(context)


def report_error(op, context, message: str, fix: str | None = None) -> None:
    """An ERROR report (a RuntimeError in scripts) and the panel's error box, with the fix."""
    show_error(context, message, fix)
    op.report({"ERROR"}, report_text(message, fix))


def report_addon_error(op, context, exc: AddonError) -> None:
    report_error(op, context, exc.message, exc.fix)


def report_internal_error(op, context, exc: BaseException) -> None:
    """A bug: one report, the traceback in the system console."""
    traceback.print_exc()
    report_error(op, context, f"internal error: {exc}", "see the system console and report it")


def in_background_thread(fn: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None]) -> None:
    """Run ``fn`` in a thread; call ``on_done(result, error)`` later on Blender's main thread."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def poll():
        if thread.is_alive():
            return 0.2
        try:
            on_done(box.get("result"), box.get("error"))
        except Exception:
            traceback.print_exc()
        return None

    bpy.app.timers.register(poll, first_interval=0.2)
