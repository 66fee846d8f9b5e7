"""The Models box's buttons (Refresh, Download, Cancel, Remove) and the panel's model menu choice.

The work runs in the backend (the server, or a child process for In Blender: ``core/models.py``), followed
by threads; this module only starts it and, on Blender's main thread (a ``bpy.app.timers`` timer), shows
progress, then refreshes the model list and the backend status when a download ends. ``wait=True`` (and
background Blender) blocks instead, for scripts:

    bpy.ops.orbitmesh.model_download(model="triposr", wait=True)   # {'FINISHED'}; RuntimeError with the fix
    bpy.ops.orbitmesh.model_remove(model="triposr", wait=True)
"""

from __future__ import annotations

import atexit
import time

import bpy
from bpy.props import BoolProperty, StringProperty

from . import preferences as prefs_mod
from .core import models, session
from .core.errors import AddonError, report_text
from .ops_common import in_background_thread, redraw

WATCH_S = 0.25  # how often a running download's progress is redrawn


def backend_name(prefs) -> str:
    """The name the backends report (``server`` / ``inprocess``), which keys the view and the last health."""
    return "server" if prefs.backend == "SERVER" else "inprocess"


def _refresh_status() -> None:
    from . import ops_server

    try:
        ops_server.check_status(bpy.context, wait=bpy.app.background)  # the panel's models and default
    except Exception as exc:  # the status line says it
        print(f"OrbitMesh: backend check failed: {exc}")


def refresh_list(context, *, wait: bool) -> None:
    """List the configured backend's models into :data:`models.VIEW` (in a thread unless ``wait``)."""
    view = models.VIEW
    prefs = prefs_mod.get_prefs(context)
    name = backend_name(prefs)
    try:
        backend = prefs_mod.make_backend(prefs)
    except AddonError as exc:
        view.set_error(name, exc.message, exc.fix)
        return

    def apply(rows, error) -> None:
        if error is None:
            view.set_rows(name, rows or [])
        else:
            view.set_error(name, getattr(error, "message", str(error)), getattr(error, "fix", None))
        redraw(bpy.context)

    view.loading = True
    if wait:
        try:
            rows, error = models.list_models(backend), None
        except AddonError as exc:
            rows, error = None, exc
        apply(rows, error)
    else:
        in_background_thread(lambda: models.list_models(backend), apply)


def _after_download(ended: list[models.DownloadState]) -> None:
    """Downloads ended: the list changes (a partial download too); a finished one also changes the status line,
    the panel's menu and the default model."""
    for st in ended:
        if st.status == "failed" and st.error:
            print("OrbitMesh: " + report_text(f"download of {st.name} failed: {st.error.get('message')}",
                                              st.error.get("fix")))
    refresh_list(bpy.context, wait=bpy.app.background)
    if any(st.status == "done" for st in ended):
        _refresh_status()


def _watch_downloads():
    """Timer: redraw while downloads run; when one ends, refresh. Stops itself when none is left."""
    try:
        ended = models.VIEW.collect()
        redraw(bpy.context)
        if ended:
            _after_download(ended)
    except Exception as exc:
        print(f"OrbitMesh: following the model downloads failed: {exc}")
    return WATCH_S if models.VIEW.active else None


def _watch() -> None:
    if not bpy.app.timers.is_registered(_watch_downloads):
        bpy.app.timers.register(_watch_downloads, first_interval=WATCH_S, persistent=True)  # across file loads


def _row(name: str) -> dict:
    prefs = prefs_mod.get_prefs(bpy.context)
    rows, _listed = models.VIEW.rows_for(backend_name(prefs), session.LAST_HEALTH.get(backend_name(prefs)))
    return next((r for r in rows if r.get("name") == name), {"name": name})


class ORBITMESH_OT_models_refresh(bpy.types.Operator):
    """List the backend's models again: kind, licence, size, whether each is downloaded"""

    bl_idname = "orbitmesh.models_refresh"
    bl_label = "Refresh Models"
    wait: BoolProperty(default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        refresh_list(context, wait=self.wait or bpy.app.background)
        error = models.VIEW.error
        if (self.wait or bpy.app.background) and error:
            self.report({"ERROR"}, report_text(error["message"], error.get("fix")))
            return {"CANCELLED"}
        return {"FINISHED"}


class ORBITMESH_OT_model_download(bpy.types.Operator):
    """Download this model into the model folder, in the backend (the server or a child process); shows its
    licence first"""

    bl_idname = "orbitmesh.model_download"
    bl_label = "Download Model"
    model: StringProperty(name="Model", options={"SKIP_SAVE"})
    wait: BoolProperty(default=False, options={"SKIP_SAVE"})

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self, width=480, title=f"Download {self.model}?",
                                                          confirm_text="Accept Licence and Download")

    def draw(self, context):
        draw_licence(self.layout, _row(self.model))

    def execute(self, context):
        view = models.VIEW
        if not self.model:
            self.report({"ERROR"}, "OrbitMesh: no model named")
            return {"CANCELLED"}
        if self.model in view.downloads:
            self.report({"WARNING"}, f"OrbitMesh: {self.model} is already downloading")
            return {"CANCELLED"}
        prefs = prefs_mod.get_prefs(context)
        try:
            handle = models.start_download(prefs_mod.make_backend(prefs), self.model,
                                           log_path=prefs_mod.user_dir() / "models.log")
        except AddonError as exc:
            view.note(self.model, backend_name(prefs), "failed", "failed", {"message": exc.message, "fix": exc.fix})
            self.report({"ERROR"}, report_text(f"cannot download {self.model}: {exc.message}", exc.fix))
            return {"CANCELLED"}
        view.start(handle)
        redraw(context)
        if not (self.wait or bpy.app.background):
            _watch()
            self.report({"INFO"}, f"OrbitMesh: downloading {self.model}")
            return {"FINISHED"}
        try:
            while not handle.finished:  # a script's Ctrl-C cancels the download (its partial data is kept)
                try:
                    time.sleep(0.1)
                except KeyboardInterrupt:
                    handle.cancel()
            final = handle.wait()
        finally:
            ended = view.collect()
            if ended:
                _after_download(ended)
        if final.status == "done":
            self.report({"INFO"}, f"OrbitMesh: {self.model} downloaded")
            return {"FINISHED"}
        if final.status == "cancelled":
            self.report({"WARNING"}, f"OrbitMesh: download of {self.model} {final.message}")
            return {"CANCELLED"}
        error = final.error or {"message": "the download failed", "fix": None}
        self.report({"ERROR"}, report_text(f"download of {self.model} failed: {error.get('message')}",
                                           error.get("fix")))
        return {"CANCELLED"}


class ORBITMESH_OT_model_cancel(bpy.types.Operator):
    """Stop this model's download (the partial download is kept and resumes next time)"""

    bl_idname = "orbitmesh.model_cancel"
    bl_label = "Cancel Download"
    model: StringProperty(name="Model", options={"SKIP_SAVE"})

    def execute(self, context):
        handle = models.VIEW.downloads.get(self.model)
        if handle is None:
            self.report({"WARNING"}, f"OrbitMesh: {self.model} is not downloading")
            return {"CANCELLED"}
        handle.cancel()
        redraw(context)
        return {"FINISHED"}


class ORBITMESH_OT_model_remove(bpy.types.Operator):
    """Delete this model (and any partial download of it) from the model folder, freeing the space; only what
    OrbitMesh's model manager put there"""

    bl_idname = "orbitmesh.model_remove"
    bl_label = "Remove Model"
    model: StringProperty(name="Model", options={"SKIP_SAVE"})
    wait: BoolProperty(default=False, options={"SKIP_SAVE"})

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event, title=f"Remove {self.model}?",
                                                     message="Delete its files from the model folder?",
                                                     confirm_text="Remove", icon="WARNING")

    def execute(self, context):
        view = models.VIEW
        if self.model in view.downloads:
            self.report({"ERROR"}, f"OrbitMesh: {self.model} is downloading; cancel it first")
            return {"CANCELLED"}
        prefs = prefs_mod.get_prefs(context)
        try:
            backend = prefs_mod.make_backend(prefs)
        except AddonError as exc:
            self.report({"ERROR"}, report_text(exc.message, exc.fix))
            return {"CANCELLED"}
        name, which = self.model, backend_name(prefs)
        blocking = self.wait or bpy.app.background  # read now: `done` may run after this operator is gone

        def done(answer, error) -> None:
            if error is None:
                freed = int((answer or {}).get("freed_bytes") or 0)
                what = "removed" if (answer or {}).get("removed") else "nothing of it was installed here"
                view.note(name, which, "done", f"{what} ({models.bytes_text(freed)} freed)" if freed else what)
            else:
                view.note(name, which, "failed", "remove failed",
                          {"message": getattr(error, "message", str(error)), "fix": getattr(error, "fix", None)})
            refresh_list(bpy.context, wait=blocking)
            if error is None:
                _refresh_status()

        if not blocking:
            in_background_thread(lambda: models.remove_model(backend, name), done)
            return {"FINISHED"}
        try:
            answer, error = models.remove_model(backend, name), None
        except AddonError as exc:
            answer, error = None, exc
        done(answer, error)
        if error is not None:
            self.report({"ERROR"}, report_text(f"cannot remove {name}: {error.message}", error.fix))
            return {"CANCELLED"}
        self.report({"INFO"}, f"OrbitMesh: {name}: {view.outcomes[name].message}")
        return {"FINISHED"}


class ORBITMESH_OT_use_model(bpy.types.Operator):
    """Use this model for the next jobs (empty: the backend's default)"""

    bl_idname = "orbitmesh.use_model"
    bl_label = "Use Model"
    bl_options = {"UNDO"}
    setting: StringProperty(default="model", options={"SKIP_SAVE"})
    value: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        if self.setting not in models.MENU_KINDS:
            self.report({"ERROR"}, f"OrbitMesh: no model menu for {self.setting!r}")
            return {"CANCELLED"}
        setattr(context.scene.orbitmesh, self.setting, self.value)
        return {"FINISHED"}


def draw_licence(layout, row: dict) -> None:
    """What a download accepts: the licence, its commercial condition, the size, gating."""
    col = layout.column(align=True)
    col.label(text=f"{row.get('name')}: {models.KIND_LABELS.get(str(row.get('kind')), row.get('kind') or '?')}",
              icon=models.KIND_ICONS.get(str(row.get("kind")), "QUESTION"))
    col.label(text=f"Licence: {row.get('licence') or '?'}", icon="FILE_TEXT")
    col.label(text=models.COMMERCIAL_LABELS.get(str(row.get("commercial")), "commercial use: unknown"),
              icon="ERROR" if row.get("commercial") == "no" else "CHECKMARK")
    if row.get("condition"):
        col.label(text=f"Condition: {row['condition']}")
    if row.get("licence_url"):
        col.label(text=str(row["licence_url"]))
    col.label(text=f"Size: about {models.size_text(row.get('size_gb'))}")
    if row.get("gated"):
        col.label(text="Gated: accept the licence on its hub page and log in (HF_TOKEN)", icon="LOCKED")


CLASSES = (ORBITMESH_OT_models_refresh, ORBITMESH_OT_model_download, ORBITMESH_OT_model_cancel,
           ORBITMESH_OT_model_remove, ORBITMESH_OT_use_model)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)


def _stop_children() -> None:
    models.VIEW.cancel_all(children_only=True)  # a child download ends with Blender (its partial data is kept)


def register() -> None:
    _register_classes()
    atexit.register(_stop_children)


def unregister() -> None:
    if bpy.app.timers.is_registered(_watch_downloads):
        bpy.app.timers.unregister(_watch_downloads)
    _stop_children()
    atexit.unregister(_stop_children)
    _unregister_classes()
