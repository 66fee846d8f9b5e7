"""Generate (modal, timer-driven; ``wait=True`` blocks) and Cancel.

    bpy.ops.orbitmesh.generate(image_path="chair.png", seed=7, target_faces=20000, size=1.0, wait=True)

The operator's setting arguments are built from the contract, one per setting; an argument not
passed comes from the panel (or, for a setting the panel does not show, is the backend's default).
Worker threads (backends) never touch bpy: every scene change happens here, on the main thread,
inside the operator (one undo step per generated object).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from . import importer, properties
from . import preferences as prefs_mod
from .contract import TERMINAL
from .core import backends, session
from .core import jobs as joblist
from .core import settings as contract_settings
from .core.errors import AddonError
from .images import export_image_datablock
from .ops_common import redraw, report_addon_error, report_error, report_internal_error, state

TICK_S = 0.1


def import_record(context, rec: joblist.JobRecord):
    """Import a finished job's GLB; raises AddonError when it cannot."""
    obj = importer.import_glb(context, rec.glb_path, name=rec.name, size=rec.size,
                              metadata=joblist.object_metadata(rec))
    rec.object_name = obj.name
    return obj


class ORBITMESH_OT_generate(bpy.types.Operator):
    """Generate a textured mesh from an image or a prompt (Esc cancels)"""

    bl_idname = "orbitmesh.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER", "UNDO"}

    # Every property is SKIP_SAVE so "was it passed?" (is_property_set) means this call only;
    # anything not passed comes from the panel. The settings' properties follow `prompt` (see below).
    image_path: StringProperty(name="Image Path", subtype="FILE_PATH", options={"SKIP_SAVE"})
    image_name: StringProperty(name="Image Datablock", options={"SKIP_SAVE"})
    prompt: StringProperty(name="Prompt", options={"SKIP_SAVE"})
    size: FloatProperty(name="Size", default=1.0, min=0.001, subtype="DISTANCE", unit="LENGTH",
                        options={"SKIP_SAVE"})
    wait: BoolProperty(name="Wait", description="Block until done (scripts, background Blender)",
                       default=False, options={"SKIP_SAVE"})

    _timer = None
    _handle = None
    _record = None

    # -- building the job --

    def _passed(self, name: str) -> bool:
        return self.properties.is_property_set(name)

    def job_settings(self, panel) -> dict[str, Any]:
        """The settings dict of this call: each argument passed, else the panel's value, else the default."""
        out = {}
        for s in contract_settings.SETTINGS:
            name = s["name"]
            if self._passed(name) or not s["panel"]:
                value = getattr(self, name)
                out[name] = value.strip() if isinstance(value, str) else value
            else:
                out[name] = properties.panel_value(panel, s)
        contract_settings.check(out)
        return out

    def _source(self, panel) -> tuple[str, str | None, str | None, str, Any]:
        """(kind, image_path, prompt, object name, image datablock) from the call, else from the panel."""
        given = [k for k in ("image_path", "image_name", "prompt") if self._passed(k) and getattr(self, k).strip()]
        if len(given) > 1:
            raise AddonError("give one source: image_path, image_name or prompt", fix=f"drop one of {given}")
        if given:
            kind = {"image_path": "FILE", "image_name": "DATABLOCK", "prompt": "PROMPT"}[given[0]]
            path, image_name, prompt = self.image_path, self.image_name, self.prompt
        else:
            kind = panel.source
            path, prompt = panel.image_path, panel.prompt
            image_name = panel.image.name if panel.image else ""
        if kind == "FILE":
            path = bpy.path.abspath(path.strip()) if path.strip() else ""
            if not path:
                raise AddonError("no image chosen", fix="pick an image file in the OrbitMesh panel")
            if not os.path.isfile(path):
                raise AddonError(f"image not found: {path}", fix="check the path")
            return "image", path, None, Path(path).stem, None
        if kind == "DATABLOCK":
            image = bpy.data.images.get(image_name) if image_name else None
            if image is None:
                raise AddonError(f"no image named '{image_name}' in this file" if image_name else "no image chosen",
                                 fix="pick an image open in Blender, or an image file")
            return "image", None, None, Path(image.name).stem, image
        prompt = prompt.strip()
        if not prompt:
            raise AddonError("the prompt is empty", fix="describe the object, e.g. 'a wooden chair'")
        return "prompt", None, prompt, prompt[:40], None

    def _start(self, context) -> None:
        prefs = prefs_mod.get_prefs(context)
        panel = context.scene.orbitmesh
        st = state(context)
        settings = self.job_settings(panel)
        if st.status_ok and st.modes and settings["mode"] not in st.modes.split(","):
            raise AddonError(f"the backend does not offer {settings['mode']} mode",
                             fix=f"use one of: {st.modes.replace(',', ', ')}")
        size = self.size if self._passed("size") else panel.size
        backend = prefs_mod.make_backend(prefs)
        kind, image_path, prompt, name, image = self._source(panel)
        job_id = joblist.new_job_id(name)
        work_dir = prefs_mod.output_root(prefs) / job_id
        work_dir.mkdir(parents=True, exist_ok=True)
        if image is not None:
            image_path = export_image_datablock(image, work_dir)
        spec = backends.JobSpec(name=name, work_dir=work_dir, image_path=image_path, prompt=prompt,
                                settings=settings)
        handle = backend.submit(spec)
        rec = joblist.JobRecord(id=job_id, name=name, backend=backend.name, source_kind=kind,
                                image_path=image_path or "", prompt=prompt or "", settings=settings, size=size,
                                work_dir=str(work_dir), status=handle.state().status,
                                preview_path=image_path or "")
        session.job_list().add(rec)
        session.ACTIVE[rec.id] = handle
        self._handle, self._record = handle, rec
        st.running, st.job_id, st.status, st.stage, st.message = True, rec.id, rec.status, "", "submitted"
        st.progress, st.eta_s, st.error, st.error_fix = 0.0, -1.0, "", ""
        redraw(context)

    # -- following it --

    def _tick(self, context) -> set[str] | None:
        s = self._handle.state()
        rec = self._record
        changed = s.status != rec.status
        rec.status, rec.stage, rec.message, rec.progress = s.status, s.stage, s.message, s.progress
        rec.eta_s = s.eta_s
        for key in ("remote_id", "job_dir", "glb_path", "version"):
            if getattr(s, key):
                setattr(rec, key, getattr(s, key))
        if s.preview_path:
            rec.preview_path = s.preview_path
        if s.result and s.result.get("model"):
            rec.model = str(s.result["model"])
        if s.result and isinstance(s.result.get("licences"), dict):
            rec.licences = dict(s.result["licences"])  # shown in the job list, carried by the imported object
        st = state(context)
        if st.job_id == rec.id:
            st.status, st.stage, st.message, st.progress = s.status, s.stage, s.message, s.progress
            st.eta_s = -1.0 if s.eta_s is None else float(s.eta_s)
        if s.status not in TERMINAL:
            if changed:
                session.job_list().save()
            redraw(context)
            return None
        session.ACTIVE.pop(rec.id, None)
        rec.finished = time.time()
        if st.job_id == rec.id:
            st.running = False
        try:
            if s.status == "done":
                obj = import_record(context, rec)
                self.report({"INFO"}, f"OrbitMesh: imported '{obj.name}'")
                return {"FINISHED"}
            if s.status == "cancelled":
                rec.error = None
                self.report({"WARNING"}, f"OrbitMesh: job '{rec.name}' cancelled")
                return {"CANCELLED"}
            err = s.error or {"message": "the job failed", "fix": None}
            rec.error = err
            report_error(self, context, err.get("message") or "the job failed", err.get("fix"))
            return {"CANCELLED"}
        except AddonError as exc:  # the result could not be imported
            rec.status, rec.error = "failed", {"message": exc.message, "fix": exc.fix}
            report_addon_error(self, context, exc)
            return {"CANCELLED"}
        finally:
            if st.job_id == rec.id:
                st.status = rec.status
            session.job_list().save()
            redraw(context)

    # -- operator API --

    def execute(self, context):
        try:
            self._start(context)
        except AddonError as exc:
            report_addon_error(self, context, exc)
            return {"CANCELLED"}
        except Exception as exc:  # a bug: one report, details in the console
            report_internal_error(self, context, exc)
            return {"CANCELLED"}
        if self.wait or context.window is None or bpy.app.background:
            return self._run_blocking(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TICK_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def invoke(self, context, event):
        return self.execute(context)

    def _run_blocking(self, context):
        while True:
            try:
                result = self._tick(context)
            except KeyboardInterrupt:
                self._handle.request_cancel()
                continue
            except Exception as exc:
                self._handle.request_cancel()
                report_internal_error(self, context, exc)
                return {"CANCELLED"}
            if result is not None:
                return result
            try:
                time.sleep(0.05)
            except KeyboardInterrupt:
                self._handle.request_cancel()

    def modal(self, context, event):
        try:
            if event.type == "ESC" and event.value == "PRESS":
                self._handle.request_cancel()
                state(context).message = "cancelling"
                return {"RUNNING_MODAL"}
            if event.type == "TIMER" and event.timer is self._timer:
                result = self._tick(context)
                if result is not None:
                    self._stop_timer(context)
                    return result
        except Exception as exc:
            self._handle.request_cancel()
            self._stop_timer(context)
            report_internal_error(self, context, exc)
            return {"CANCELLED"}
        return {"PASS_THROUGH"}

    def cancel(self, context):  # Blender ends the operator (file load, quit): stop the job too
        if self._handle is not None:
            self._handle.request_cancel()
        self._stop_timer(context)

    def _stop_timer(self, context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None


# One argument per generate setting, from the contract, after `prompt`: today image_path, image_name,
# prompt, mode, model, text_to_image_model, seed, mc_resolution, target_faces, texture_size, size, wait.
ORBITMESH_OT_generate.__annotations__ = properties.with_settings(
    ORBITMESH_OT_generate.__annotations__, "prompt", contract_settings.SETTINGS, operator=True)


class ORBITMESH_OT_cancel(bpy.types.Operator):
    """Cancel running OrbitMesh jobs (all of them, or the one given)"""

    bl_idname = "orbitmesh.cancel"
    bl_label = "Cancel"
    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        n = session.request_cancel(self.job_id)
        if n:
            state(context).message = "cancelling"
            self.report({"INFO"}, f"OrbitMesh: cancelling {n} job(s)")
        else:
            self.report({"WARNING"}, "OrbitMesh: no running job to cancel")
        return {"FINISHED"}


CLASSES = (ORBITMESH_OT_generate, ORBITMESH_OT_cancel)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)


def register() -> None:
    _register_classes()


def unregister() -> None:
    session.request_cancel()  # no job may outlive the add-on
    _unregister_classes()
