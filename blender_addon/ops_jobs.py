"""The job list's buttons: re-import, open folder, regenerate, remove."""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, StringProperty

from .core import jobs as joblist
from .core import session
from .core.errors import AddonError
from .ops_common import redraw, report_addon_error, report_error
from .ops_generate import import_record


def _record(op, job_id: str) -> joblist.JobRecord | None:
    rec = session.job_list().get(job_id)
    if rec is None:
        op.report({"ERROR"}, f"OrbitMesh: no job {job_id!r} in the list")
    return rec


class ORBITMESH_OT_reimport(bpy.types.Operator):
    """Import this job's result again at the 3D cursor"""

    bl_idname = "orbitmesh.reimport"
    bl_label = "Re-import"
    bl_options = {"REGISTER", "UNDO"}
    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        rec = _record(self, self.job_id)
        if rec is None:
            return {"CANCELLED"}
        if rec.status != "done":
            report_error(self, context, f"job '{rec.name}' has no result ({rec.status})", "regenerate it")
            return {"CANCELLED"}
        try:
            obj = import_record(context, rec)
        except AddonError as exc:
            report_addon_error(self, context, exc)
            return {"CANCELLED"}
        session.job_list().save()
        self.report({"INFO"}, f"OrbitMesh: imported '{obj.name}'")
        return {"FINISHED"}


class ORBITMESH_OT_open_folder(bpy.types.Operator):
    """Open this job's folder in the file browser"""

    bl_idname = "orbitmesh.open_folder"
    bl_label = "Open Folder"
    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        rec = _record(self, self.job_id)
        if rec is None:
            return {"CANCELLED"}
        folder = rec.folder
        if not folder or not os.path.isdir(folder):
            report_error(self, context, f"the job folder is gone: {folder}", "regenerate the job")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


class ORBITMESH_OT_regenerate(bpy.types.Operator):
    """Run this job again with the same source and settings"""

    bl_idname = "orbitmesh.regenerate"
    bl_label = "Regenerate"
    job_id: StringProperty(options={"SKIP_SAVE"})
    wait: BoolProperty(default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        rec = _record(self, self.job_id)
        if rec is None:
            return {"CANCELLED"}
        if rec.source_kind == "image" and not os.path.isfile(rec.image_path):
            report_error(self, context, f"the input image is gone: {rec.image_path}", "pick it again in the panel")
            return {"CANCELLED"}
        kw = joblist.regenerate_kwargs(rec)
        if self.wait:
            return bpy.ops.orbitmesh.generate(wait=True, **kw)
        return bpy.ops.orbitmesh.generate("INVOKE_DEFAULT", **kw)


class ORBITMESH_OT_remove_job(bpy.types.Operator):
    """Remove this job from the list (its folder stays on disk); empty: all finished jobs"""

    bl_idname = "orbitmesh.remove_job"
    bl_label = "Remove Job"
    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        if not self.job_id:
            session.job_list().clear_finished()
        elif self.job_id in session.ACTIVE:
            self.report({"WARNING"}, "OrbitMesh: cancel the job before removing it")
            return {"CANCELLED"}
        else:
            session.job_list().remove(self.job_id)
        redraw(context)
        return {"FINISHED"}


CLASSES = (ORBITMESH_OT_reimport, ORBITMESH_OT_open_folder, ORBITMESH_OT_regenerate, ORBITMESH_OT_remove_job)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
