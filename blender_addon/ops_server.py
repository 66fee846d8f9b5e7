"""The backend's status (Check Backend) and the local server (Start Server, Stop Server).

A check fills the panel's status line from ``/health`` (or the subprocess probe) and remembers
the answer in ``core.session.LAST_HEALTH``; the server process this session started is
``core.session.SERVER``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty

from . import preferences as prefs_mod
from .core import backends, health, session
from .core.errors import AddonError
from .ops_common import in_background_thread, redraw, report_addon_error, state


def apply_health(context, backend_name: str, data: dict | None, error: BaseException | None) -> None:
    """Show a check's outcome in the panel (main thread)."""
    if error is None and data is not None:
        session.LAST_HEALTH[backend_name] = data
    st = state(context)
    st.checking = False
    for key, value in health.panel_values(backend_name, data, error).items():
        setattr(st, key, value)
    redraw(context)


def check_status(context, *, wait: bool) -> None:
    """Check the configured backend; ``wait=False`` checks in a thread and updates the panel later."""
    try:
        backend = prefs_mod.make_backend(prefs_mod.get_prefs(context))
    except AddonError as exc:
        apply_health(context, "?", None, exc)
        return
    state(context).checking = True
    if wait:
        try:
            data, err = backend.health(), None
        except AddonError as exc:
            data, err = None, exc
        apply_health(context, backend.name, data, err)
    else:
        in_background_thread(backend.health, lambda data, err: apply_health(bpy.context, backend.name, data, err))


class ORBITMESH_OT_refresh_status(bpy.types.Operator):
    """Check the backend: version, device and memory, models, modes"""

    bl_idname = "orbitmesh.refresh_status"
    bl_label = "Check Backend"
    wait: BoolProperty(default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        check_status(context, wait=self.wait or bpy.app.background)
        return {"FINISHED"}


def server_log_path() -> Path:
    return prefs_mod.user_dir() / "server.log"


class ORBITMESH_OT_start_server(bpy.types.Operator):
    """Start `orbitmesh serve` for the configured URL and wait until it answers"""

    bl_idname = "orbitmesh.start_server"
    bl_label = "Start Server"
    wait: BoolProperty(default=False, options={"SKIP_SAVE"})
    timeout: FloatProperty(default=120.0, min=1.0, options={"SKIP_SAVE"})

    def execute(self, context):
        prefs = prefs_mod.get_prefs(context)
        st = state(context)
        try:
            backend = backends.ServerBackend(prefs.server_url, token=prefs.server_token or None)
            try:
                data = backend.health(timeout=1.0)
                apply_health(context, "server", data, None)
                self.report({"INFO"}, "OrbitMesh: a server is already running at " + backend.client.base_url)
                return {"FINISHED"}
            except AddonError:
                pass
            proc = session.SERVER["proc"]
            if proc is None or proc.poll() is not None:
                proc = backends.start_server(
                    bpy.path.abspath(prefs.python_path) if prefs.python_path else sys.executable,
                    prefs.server_url, prefs_mod.python_paths(prefs),
                    model_dir=bpy.path.abspath(prefs.model_dir) if prefs.model_dir else "",
                    device=prefs.device, output_dir=str(prefs_mod.output_root(prefs) / "server"),
                    log_path=server_log_path(), token=prefs.server_token)
                session.SERVER["proc"] = proc
        except AddonError as exc:
            report_addon_error(self, context, exc)
            return {"CANCELLED"}

        def wait_healthy():
            return backends.wait_for_health(prefs.server_url, proc, timeout=self.timeout,
                                            token=prefs.server_token, log_path=server_log_path())

        st.server_starting, st.status_line = True, "starting the server..."
        if self.wait or bpy.app.background:
            try:
                data, err = wait_healthy(), None
            except AddonError as exc:
                data, err = None, exc
            st.server_starting = False
            apply_health(context, "server", data, err)
            if err is not None:
                report_addon_error(self, context, err)
                return {"CANCELLED"}
            return {"FINISHED"}

        def done(data, err):
            state(bpy.context).server_starting = False
            apply_health(bpy.context, "server", data, err)

        in_background_thread(wait_healthy, done)
        return {"FINISHED"}


class ORBITMESH_OT_stop_server(bpy.types.Operator):
    """Stop the server this Blender session started"""

    bl_idname = "orbitmesh.stop_server"
    bl_label = "Stop Server"

    def execute(self, context):
        if session.stop_server():
            apply_health(context, "server", None, AddonError("server stopped", fix="Start Server to run it again"))
            self.report({"INFO"}, "OrbitMesh: server stopped")
        else:
            self.report({"WARNING"}, "OrbitMesh: this Blender session did not start a running server")
        return {"FINISHED"}


CLASSES = (ORBITMESH_OT_refresh_status, ORBITMESH_OT_start_server, ORBITMESH_OT_stop_server)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)


def register() -> None:
    _register_classes()


def unregister() -> None:
    session.stop_server()  # no server outlives the add-on that started it
    _unregister_classes()
