"""The "OrbitMesh" sidebar tab of the 3D Viewport: source, settings, Generate, progress, jobs.

``draw_main`` / ``draw_jobs`` / ``draw_model_menu`` take any layout so tests can drive them with a recording
stub. Drawing never does I/O beyond loading thumbnails (the backend status and the model list come from a
cached check). The settings drawn are the contract's panel settings, in contract order
(:func:`draw_settings`); the reconstruction model gets a menu of the backend's models (the available ones
first) and a line saying which model a job will use.
"""

from __future__ import annotations

import os

import bpy

from . import preferences as prefs_mod
from .core import health, models, session
from .core import jobs as joblist
from .core import settings as contract_settings

STATUS_ICONS = {"submitting": "TIME", "queued": "TIME", "running": "PLAY", "done": "CHECKMARK",
                "failed": "ERROR", "cancelled": "CANCEL"}
JOBS_SHOWN = 8
_PREVIEWS: dict[str, object] = {}


def thumbnail(path: str):
    """A preview of the image at ``path`` (None when it cannot be loaded). Its icon_id is 0 in background mode."""
    coll = _PREVIEWS.get("coll")
    if coll is None or not path or not os.path.isfile(path):
        return None
    try:
        return coll.get(path) or coll.load(path, path, "IMAGE")
    except (KeyError, RuntimeError):
        return None


def format_eta(eta_s: float | None) -> str:
    if eta_s is None or eta_s < 0:
        return ""
    if eta_s < 60:
        return f"ETA {eta_s:.0f} s"
    return f"ETA {int(eta_s // 60)} min {int(eta_s % 60):02d} s"


def progress_text(stage: str, progress: float, eta_s: float | None, message: str = "") -> str:
    parts = [stage or message or "waiting", f"{progress * 100:.0f}%"]
    eta = format_eta(eta_s)
    if eta:
        parts.append(eta)
    return " | ".join(parts)


def draw_status(layout, context) -> None:
    st = context.window_manager.orbitmesh_state
    prefs = prefs_mod.get_prefs(context)
    box = layout.box()
    row = box.row(align=True)
    backend = "Server" if prefs.backend == "SERVER" else "In Blender"
    row.label(text=backend, icon="CHECKMARK" if st.status_ok else "ERROR")
    row.operator("orbitmesh.refresh_status", text="", icon="FILE_REFRESH")
    col = box.column(align=True)
    col.scale_y = 0.8
    col.label(text="checking..." if st.checking else st.status_line)
    if prefs.backend == "SERVER" and not st.status_ok:
        sub = box.row()
        sub.enabled = not st.server_starting
        sub.operator("orbitmesh.start_server", text="Starting..." if st.server_starting else "Start Server",
                     icon="PLAY")


def backend_rows(prefs) -> list[dict]:
    """The configured backend's model rows: its last model list, else its last health check's."""
    backend = "server" if prefs.backend == "SERVER" else "inprocess"
    return models.VIEW.rows_for(backend, session.LAST_HEALTH.get(backend))[0]


def draw_model_menu(layout, context, setting: str = "model") -> None:
    """The models of the setting's kind: the backend's default, the available ones, then those not downloaded."""
    prefs = prefs_mod.get_prefs(context)
    st = context.window_manager.orbitmesh_state
    rows = models.menu_rows(backend_rows(prefs), models.MENU_KINDS[setting])
    default = f"Backend Default ({st.default_model})" if st.default_model else "Backend Default"
    op = layout.operator("orbitmesh.use_model", text=default, icon="SETTINGS")
    op.setting, op.value = setting, ""
    if not rows:
        layout.label(text="Check Backend to list the models", icon="INFO")
        return
    available = [r for r in rows if r.get("available")]
    missing = [r for r in rows if not r.get("available")]
    layout.separator()
    if not available:
        layout.label(text="No model downloaded", icon="INFO")
    for row in available:
        mark = health.COMMERCIAL_MARKS.get(str(row.get("commercial")))
        op = layout.operator("orbitmesh.use_model", text=str(row["name"]) + (f" ({mark})" if mark else ""),
                             icon="CHECKMARK")
        op.setting, op.value = setting, str(row["name"])
    if missing:
        layout.separator()
        layout.label(text="Not downloaded (Preferences > Add-ons > OrbitMesh > Models)")
        for row in missing:
            op = layout.operator("orbitmesh.use_model", text=f"{row['name']} ({models.size_text(row.get('size_gb'))})",
                                 icon="IMPORT")
            op.setting, op.value = setting, str(row["name"])


def draw_job_model(layout, panel, st, prefs, setting: str = "model") -> None:
    """'A job will use: triposr' (+ backend default / not downloaded / refused under commercial use only)."""
    name, note = models.job_model(getattr(panel, setting), backend_rows(prefs), st.default_model,
                                  prefs.commercial_only)
    row = layout.row()
    row.alert = "not downloaded" in note or "commercial" in note
    text = f"A job will use: {name} ({note})" if name and note else f"A job will use: {name or note}"
    row.label(text=text, icon="ERROR" if row.alert else "INFO")


def draw_settings(layout, panel, st, prefs=None) -> None:
    """Each panel setting of the contract: a choice as a row of buttons, the rest in a column; then Size."""
    offered = set(st.modes.split(",")) if st.modes else None  # the modes the backend has (None: unknown)
    col = None
    for s in contract_settings.PANEL:
        name = s["name"]
        if s["type"] == "choice":
            row = layout.row(align=True)
            for value, _label, _description in s["choices"]:
                sub = row.row(align=True)
                sub.enabled = name != "mode" or offered is None or value in offered  # greyed out when lacking
                sub.prop_enum(panel, name, value)
            col = None
            continue
        col = col or layout.column(align=True)
        if s["type"] == "str" and s["optional"]:  # empty: the backend's default, shown as a placeholder
            hint = st.default_model if name == "model" else ""
            if name in MODEL_MENUS and prefs is not None:
                row = col.row(align=True)
                row.prop(panel, name, text=s["label"], placeholder=hint or "backend default")
                row.menu(MODEL_MENUS[name], text="", icon="DOWNARROW_HLT")
                draw_job_model(col, panel, st, prefs, name)
            else:
                col.prop(panel, name, text=s["label"], placeholder=hint or "backend default")
        else:
            col.prop(panel, name)
    (col or layout.column(align=True)).prop(panel, "size")


def draw_main(layout, context) -> None:
    panel = context.scene.orbitmesh
    st = context.window_manager.orbitmesh_state
    draw_status(layout, context)

    layout.prop(panel, "source", expand=True)
    if panel.source == "FILE":
        layout.prop(panel, "image_path", text="")
    elif panel.source == "DATABLOCK":
        layout.prop(panel, "image", text="")
    else:
        layout.prop(panel, "prompt", text="")

    draw_settings(layout, panel, st, prefs_mod.get_prefs(context))

    row = layout.row()
    row.scale_y = 1.5
    row.operator("orbitmesh.generate", text="Generate", icon="MESH_MONKEY")

    if st.running:
        box = layout.box()
        box.progress(factor=st.progress, type="BAR",
                     text=progress_text(st.stage, st.progress, st.eta_s, st.message))
        row = box.row()
        row.label(text=st.message or st.status)
        row.operator("orbitmesh.cancel", text="Cancel", icon="CANCEL").job_id = st.job_id
    if st.error:
        box = layout.box()
        box.alert = True
        box.label(text=st.error, icon="ERROR")
        if st.error_fix:
            box.label(text="Fix: " + st.error_fix, icon="INFO")


def draw_job(layout, rec: joblist.JobRecord) -> None:
    box = layout.box()
    row = box.row()
    preview = thumbnail(rec.preview_path or rec.image_path)
    if preview is not None:
        row.template_icon(icon_value=preview.icon_id, scale=2.5)
    col = row.column(align=True)
    col.label(text=rec.name, icon="FILE_IMAGE" if rec.source_kind == "image" else "FONT_DATA")
    col.label(text=rec.status + (f": {rec.stage}" if rec.stage and not rec.terminal else ""),
              icon=STATUS_ICONS.get(rec.status, "QUESTION"))
    if rec.status in ("queued", "running", "submitting"):
        col.progress(factor=rec.progress, type="BAR", text=progress_text(rec.stage, rec.progress, rec.eta_s))
    elif rec.error:
        sub = col.column(align=True)
        sub.alert = True
        sub.label(text=str(rec.error.get("message") or ""))
    elif rec.licences:  # what the result may be used for
        commercial = joblist.commercial_use(rec.licences)
        col.label(text=joblist.licence_summary(rec.licences),
                  icon="ERROR" if commercial in ("no", "unknown") else "FILE_TEXT")
    row = box.row(align=True)
    if rec.status == "done":
        row.operator("orbitmesh.reimport", text="", icon="IMPORT").job_id = rec.id
    row.operator("orbitmesh.open_folder", text="", icon="FILE_FOLDER").job_id = rec.id
    row.operator("orbitmesh.regenerate", text="", icon="FILE_REFRESH").job_id = rec.id
    if rec.terminal:
        row.operator("orbitmesh.remove_job", text="", icon="TRASH").job_id = rec.id
    else:
        row.operator("orbitmesh.cancel", text="", icon="CANCEL").job_id = rec.id


def draw_jobs(layout, context) -> None:
    records = session.job_list().records
    if not records:
        layout.label(text="No jobs yet", icon="INFO")
        return
    for rec in records[:JOBS_SHOWN]:
        draw_job(layout, rec)
    if len(records) > JOBS_SHOWN:
        layout.label(text=f"{len(records) - JOBS_SHOWN} older job(s) not shown")
    layout.operator("orbitmesh.remove_job", text="Clear Finished", icon="TRASH").job_id = ""


class ORBITMESH_MT_models(bpy.types.Menu):
    """The reconstruction models of the backend, the available ones first"""

    bl_idname = "ORBITMESH_MT_models"
    bl_label = "Reconstruction Model"

    def draw(self, context):
        draw_model_menu(self.layout, context, "model")


MODEL_MENUS = {"model": ORBITMESH_MT_models.bl_idname}  # a panel setting -> its menu (models.MENU_KINDS)


class VIEW3D_PT_orbitmesh(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OrbitMesh"
    bl_label = "OrbitMesh"

    def draw(self, context):
        draw_main(self.layout, context)


class VIEW3D_PT_orbitmesh_jobs(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OrbitMesh"
    bl_label = "Jobs"
    bl_parent_id = "VIEW3D_PT_orbitmesh"

    def draw(self, context):
        draw_jobs(self.layout, context)


CLASSES = (ORBITMESH_MT_models, VIEW3D_PT_orbitmesh, VIEW3D_PT_orbitmesh_jobs)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)


def register() -> None:
    import bpy.utils.previews

    _PREVIEWS["coll"] = bpy.utils.previews.new()
    _register_classes()


def unregister() -> None:
    import bpy.utils.previews

    _unregister_classes()
    coll = _PREVIEWS.pop("coll", None)
    if coll is not None:
        bpy.utils.previews.remove(coll)
