"""Operators: Generate (modal, timer-driven; ``wait=True`` blocks), Cancel, server start/stop,
status check, and the job list's re-import / open folder / regenerate / remove.

Worker threads (backends) never touch bpy: every scene change happens here, on the main
thread, inside the operator that owns it (one undo step per generated object).
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path
from typing import Any, Callable

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import backends, importer
from . import jobs as joblist
from . import preferences as prefs_mod
from .properties import MODES

TICK_S = 0.1
ADDON_VERSION = "0.1.0"


class UserError(Exception):
    """Bad input from the panel or a script: shown as a report and in the panel, never a traceback."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def _state(context):
    return context.window_manager.orbitmesh_state


def _show_error(context, message: str, fix: str | None) -> None:
    st = _state(context)
    st.error, st.error_fix = message, fix or ""
    _redraw(context)


def _report_error(op, context, message: str, fix: str | None = None) -> None:
    _show_error(context, message, fix)
    op.report({"ERROR"}, message + (f" (fix: {fix})" if fix else ""))


def _redraw(context) -> None:
    wm = context.window_manager
    for window in wm.windows:
        screen = window.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def _in_background_thread(fn: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None]) -> None:
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


# ----- PNG export of an image datablock (stdlib only, no colour-management side effects) ----


def _write_png(path: Path, rgba: np.ndarray) -> None:
    """Write (H, W, 4) uint8 top-down RGBA as a PNG."""
    h, w, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    tmp = path.with_suffix(".tmp.png")
    tmp.write_bytes(png)
    os.replace(tmp, path)


def export_image_datablock(image, work_dir: Path) -> str:
    """A file path for an image open in Blender: its own file when unchanged on disk, else a PNG copy."""
    if image.source == "FILE" and not image.packed_file and not image.is_dirty:
        path = bpy.path.abspath(image.filepath, library=image.library)
        if path and os.path.isfile(path):
            return path
    w, h = image.size
    if w == 0 or h == 0:
        raise UserError(f"the image '{image.name}' has no pixels loaded",
                        fix="open it in the Image Editor once, or pick an image file instead")
    px = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(px)
    px = px.reshape(h, w, image.channels)
    if image.channels == 3:
        px = np.concatenate([px, np.ones((h, w, 1), np.float32)], axis=2)
    elif image.channels == 1:
        px = np.concatenate([px.repeat(3, axis=2), np.ones((h, w, 1), np.float32)], axis=2)
    if image.is_float and image.colorspace_settings.name not in ("sRGB", "Non-Color"):
        rgb = np.clip(px[..., :3], 0.0, None)  # linear scene values -> sRGB for the model
        px[..., :3] = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    rgba = (np.clip(px, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)[::-1]  # Blender rows are bottom-up
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / "input.png"
    _write_png(out, np.ascontiguousarray(rgba))
    return str(out)


# ----- Generate ------------------------------------------------------------------------


def _metadata(rec: joblist.JobRecord) -> dict[str, Any]:
    return {"job_id": rec.id, "backend": rec.backend, "source": rec.source_kind,
            "image": rec.image_path, "prompt": rec.prompt, "seed": int(rec.settings.get("seed", 0)),
            "model": rec.model or rec.settings.get("model") or "",
            "mode": rec.settings.get("mode", ""), "version": rec.version or "", "addon_version": ADDON_VERSION,
            "job_dir": rec.job_dir or rec.work_dir, "remote_id": rec.remote_id, "size": rec.size,
            "settings": rec.settings}


def import_record(context, rec: joblist.JobRecord):
    obj = importer.import_glb(context, rec.glb_path, name=rec.name, size=rec.size, metadata=_metadata(rec))
    rec.object_name = obj.name
    return obj


class ORBITMESH_OT_generate(bpy.types.Operator):
    """Generate a textured mesh from an image or a prompt (Esc cancels)"""

    bl_idname = "orbitmesh.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER", "UNDO"}

    # Every property is SKIP_SAVE so "was it passed?" (is_property_set) means this call only;
    # anything not passed comes from the panel.
    image_path: StringProperty(name="Image Path", subtype="FILE_PATH", options={"SKIP_SAVE"})
    image_name: StringProperty(name="Image Datablock", options={"SKIP_SAVE"})
    prompt: StringProperty(name="Prompt", options={"SKIP_SAVE"})
    mode: EnumProperty(name="Mode", items=MODES, options={"SKIP_SAVE"})
    model: StringProperty(name="Model", description="Empty: the backend's default", options={"SKIP_SAVE"})
    seed: IntProperty(name="Seed", default=42, min=0, options={"SKIP_SAVE"})
    mc_resolution: IntProperty(name="Mesh Resolution", default=256, min=32, max=1024, options={"SKIP_SAVE"})
    target_faces: IntProperty(name="Target Faces", default=20000, min=500, max=2_000_000, options={"SKIP_SAVE"})
    texture_size: IntProperty(name="Texture Size", default=1024, min=64, max=8192, options={"SKIP_SAVE"})
    size: FloatProperty(name="Size", default=1.0, min=0.001, subtype="DISTANCE", unit="LENGTH",
                        options={"SKIP_SAVE"})
    wait: BoolProperty(name="Wait", description="Block until done (scripts, background Blender)",
                       default=False, options={"SKIP_SAVE"})

    _timer = None
    _handle = None
    _record = None

    # -- building the job --

    def _value(self, name: str, panel_value):
        return getattr(self, name) if self.properties.is_property_set(name) else panel_value

    def _source(self, panel) -> tuple[str, str | None, str | None, str, Any]:
        """(kind, image_path, prompt, object name, image datablock) from the call, else from the panel."""
        given = [k for k in ("image_path", "image_name", "prompt")
                 if self.properties.is_property_set(k) and getattr(self, k).strip()]
        if len(given) > 1:
            raise UserError("give one source: image_path, image_name or prompt", fix=f"drop one of {given}")
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
                raise UserError("no image chosen", fix="pick an image file in the OrbitMesh panel")
            if not os.path.isfile(path):
                raise UserError(f"image not found: {path}", fix="check the path")
            return "image", path, None, Path(path).stem, None
        if kind == "DATABLOCK":
            image = bpy.data.images.get(image_name) if image_name else None
            if image is None:
                raise UserError(f"no image named '{image_name}' in this file" if image_name else "no image chosen",
                                fix="pick an image open in Blender, or an image file")
            return "image", None, None, Path(image.name).stem, image
        prompt = prompt.strip()
        if not prompt:
            raise UserError("the prompt is empty", fix="describe the object, e.g. 'a wooden chair'")
        return "prompt", None, prompt, prompt[:40], None

    def _start(self, context) -> None:
        prefs = prefs_mod.get_prefs(context)
        panel = context.scene.orbitmesh
        st = _state(context)
        settings = {
            "mode": self._value("mode", panel.mode),
            "model": self._value("model", panel.model).strip(),
            "seed": self._value("seed", panel.seed),
            "mc_resolution": self._value("mc_resolution", panel.mc_resolution),
            "target_faces": self._value("target_faces", panel.target_faces),
            "texture_size": self._value("texture_size", int(panel.texture_size)),
        }
        if st.status_ok and st.modes and settings["mode"] not in st.modes.split(","):
            raise UserError(f"the backend does not offer {settings['mode']} mode",
                            fix=f"use one of: {st.modes.replace(',', ', ')}")
        size = self._value("size", panel.size)
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
        joblist.job_list().add(rec)
        joblist.ACTIVE[rec.id] = handle
        self._handle, self._record = handle, rec
        st.running, st.job_id, st.status, st.stage, st.message = True, rec.id, rec.status, "", "submitted"
        st.progress, st.eta_s, st.error, st.error_fix = 0.0, -1.0, "", ""
        _redraw(context)

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
        st = _state(context)
        if st.job_id == rec.id:
            st.status, st.stage, st.message, st.progress = s.status, s.stage, s.message, s.progress
            st.eta_s = -1.0 if s.eta_s is None else float(s.eta_s)
        if s.status not in joblist.TERMINAL:
            if changed:
                joblist.job_list().save()
            _redraw(context)
            return None
        joblist.ACTIVE.pop(rec.id, None)
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
            _report_error(self, context, err.get("message") or "the job failed", err.get("fix"))
            return {"CANCELLED"}
        except importer.ImportFailed as exc:
            rec.status, rec.error = "failed", {"message": exc.message, "fix": exc.fix}
            _report_error(self, context, exc.message, exc.fix)
            return {"CANCELLED"}
        finally:
            if st.job_id == rec.id:
                st.status = rec.status
            joblist.job_list().save()
            _redraw(context)

    # -- operator API --

    def execute(self, context):
        try:
            self._start(context)
        except (UserError, backends.BackendError) as exc:
            _report_error(self, context, exc.message, exc.fix)
            return {"CANCELLED"}
        except Exception as exc:  # a bug: one report, details in the console
            traceback.print_exc()
            _report_error(self, context, f"internal error: {exc}", "see the system console and report it")
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
                traceback.print_exc()
                self._handle.request_cancel()
                _report_error(self, context, f"internal error: {exc}", "see the system console and report it")
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
                _state(context).message = "cancelling"
                return {"RUNNING_MODAL"}
            if event.type == "TIMER" and event.timer is self._timer:
                result = self._tick(context)
                if result is not None:
                    self._stop_timer(context)
                    return result
        except Exception as exc:
            traceback.print_exc()
            self._handle.request_cancel()
            self._stop_timer(context)
            _report_error(self, context, f"internal error: {exc}", "see the system console and report it")
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


class ORBITMESH_OT_cancel(bpy.types.Operator):
    """Cancel running OrbitMesh jobs (all of them, or the one given)"""

    bl_idname = "orbitmesh.cancel"
    bl_label = "Cancel"
    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        n = joblist.request_cancel(self.job_id)
        if n:
            _state(context).message = "cancelling"
            self.report({"INFO"}, f"OrbitMesh: cancelling {n} job(s)")
        else:
            self.report({"WARNING"}, "OrbitMesh: no running job to cancel")
        return {"FINISHED"}


# ----- backend status and the local server ---------------------------------------------------


def status_line(backend_name: str, data: dict) -> str:
    dev = data.get("device") or {}
    device = str(dev.get("device") or "?")
    if dev.get("gpu"):
        device += f" {dev['gpu']}"
    if dev.get("vram_total_gb") is not None:
        device += f" ({dev.get('vram_free_gb', '?')}/{dev['vram_total_gb']} GB free)"
    models = [m.get("name") for m in data.get("models") or [] if isinstance(m, dict) and m.get("available")]
    parts = [("Server " if backend_name == "server" else "In Blender: orbitmesh ") + str(data.get("version", "?")),
             device, f"models: {', '.join(models) if models else 'none found'}"]
    if backend_name == "server":
        parts.append(f"queue {data.get('queue_length', 0)}" + (" (busy)" if data.get("busy") else ""))
    return " | ".join(parts)


LAST_HEALTH: dict[str, Any] = {}  # the last successful check's answer (backend name -> data)


def apply_health(context, backend_name: str, data: dict | None, error: BaseException | None) -> None:
    st = _state(context)
    if error is None and data is not None:
        LAST_HEALTH[backend_name] = data
    st.checking = False
    if error is not None:
        st.status_ok = False
        msg = getattr(error, "message", str(error))
        fix = getattr(error, "fix", None)
        st.status_line = msg + (f" (fix: {fix})" if fix else "")
        st.modes = "fast,quality"
    else:
        data = data or {}
        st.status_ok = True
        st.status_line = status_line(backend_name, data)
        st.modes = ",".join(data.get("modes") or ["fast"])
        st.models = ",".join(m.get("name", "") for m in data.get("models") or []
                             if isinstance(m, dict) and m.get("available"))
        st.default_model = str(data.get("default_model") or "")
    _redraw(context)


def check_status(context, *, wait: bool) -> None:
    try:
        backend = prefs_mod.make_backend(prefs_mod.get_prefs(context))
    except backends.BackendError as exc:
        apply_health(context, "?", None, exc)
        return
    st = _state(context)
    st.checking = True
    if wait:
        try:
            data, err = backend.health(), None
        except backends.BackendError as exc:
            data, err = None, exc
        apply_health(context, backend.name, data, err)
    else:
        _in_background_thread(backend.health,
                              lambda data, err: apply_health(bpy.context, backend.name, data, err))


class ORBITMESH_OT_refresh_status(bpy.types.Operator):
    """Check the backend: version, device and memory, models, modes"""

    bl_idname = "orbitmesh.refresh_status"
    bl_label = "Check Backend"
    wait: BoolProperty(default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        check_status(context, wait=self.wait or bpy.app.background)
        return {"FINISHED"}


_SERVER: dict[str, Any] = {"proc": None}


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
        st = _state(context)
        try:
            backend = backends.ServerBackend(prefs.server_url, token=prefs.server_token or None)
            try:
                data = backend.health(timeout=1.0)
                apply_health(context, "server", data, None)
                self.report({"INFO"}, "OrbitMesh: a server is already running at " + backend.client.base_url)
                return {"FINISHED"}
            except backends.BackendError:
                pass
            proc = _SERVER["proc"]
            if proc is None or proc.poll() is not None:
                proc = backends.start_server(
                    bpy.path.abspath(prefs.python_path) if prefs.python_path else sys.executable,
                    prefs.server_url, prefs_mod.python_paths(prefs),
                    model_dir=bpy.path.abspath(prefs.model_dir) if prefs.model_dir else "",
                    device=prefs.device, output_dir=str(prefs_mod.output_root(prefs) / "server"),
                    log_path=server_log_path(), token=prefs.server_token)
                _SERVER["proc"] = proc
        except backends.BackendError as exc:
            _report_error(self, context, exc.message, exc.fix)
            return {"CANCELLED"}

        def wait_healthy():
            return backends.wait_for_health(prefs.server_url, proc, timeout=self.timeout,
                                            token=prefs.server_token, log_path=server_log_path())

        st.server_starting, st.status_line = True, "starting the server..."
        if self.wait or bpy.app.background:
            try:
                data, err = wait_healthy(), None
            except backends.BackendError as exc:
                data, err = None, exc
            st.server_starting = False
            apply_health(context, "server", data, err)
            if err is not None:
                _report_error(self, context, err.message, err.fix)
                return {"CANCELLED"}
            return {"FINISHED"}

        def done(data, err):
            _state(bpy.context).server_starting = False
            apply_health(bpy.context, "server", data, err)

        _in_background_thread(wait_healthy, done)
        return {"FINISHED"}


def stop_server() -> bool:
    proc = _SERVER.get("proc")
    if proc is None or proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except Exception:
        proc.kill()
    _SERVER["proc"] = None
    return True


class ORBITMESH_OT_stop_server(bpy.types.Operator):
    """Stop the server this Blender session started"""

    bl_idname = "orbitmesh.stop_server"
    bl_label = "Stop Server"

    def execute(self, context):
        if stop_server():
            apply_health(context, "server", None, backends.BackendError("server stopped",
                                                                         fix="Start Server to run it again"))
            self.report({"INFO"}, "OrbitMesh: server stopped")
        else:
            self.report({"WARNING"}, "OrbitMesh: this Blender session did not start a running server")
        return {"FINISHED"}


# ----- the job list ------------------------------------------------------------------------


def _record(op, job_id: str) -> joblist.JobRecord | None:
    rec = joblist.job_list().get(job_id)
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
            _report_error(self, context, f"job '{rec.name}' has no result ({rec.status})", "regenerate it")
            return {"CANCELLED"}
        try:
            obj = import_record(context, rec)
        except importer.ImportFailed as exc:
            _report_error(self, context, exc.message, exc.fix)
            return {"CANCELLED"}
        joblist.job_list().save()
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
            _report_error(self, context, f"the job folder is gone: {folder}", "regenerate the job")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


def regenerate_kwargs(rec: joblist.JobRecord) -> dict[str, Any]:
    """generate() arguments that repeat ``rec`` (same source, settings and seed)."""
    kw: dict[str, Any] = {"size": rec.size}
    if rec.source_kind == "prompt":
        kw["prompt"] = rec.prompt
    else:
        kw["image_path"] = rec.image_path
    for key in ("mode", "model", "seed", "mc_resolution", "target_faces", "texture_size"):
        if rec.settings.get(key) not in (None, ""):
            kw[key] = rec.settings[key]
    return kw


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
            _report_error(self, context, f"the input image is gone: {rec.image_path}", "pick it again in the panel")
            return {"CANCELLED"}
        kw = regenerate_kwargs(rec)
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
            joblist.job_list().clear_finished()
        elif self.job_id in joblist.ACTIVE:
            self.report({"WARNING"}, "OrbitMesh: cancel the job before removing it")
            return {"CANCELLED"}
        else:
            joblist.job_list().remove(self.job_id)
        _redraw(context)
        return {"FINISHED"}


CLASSES = (ORBITMESH_OT_generate, ORBITMESH_OT_cancel, ORBITMESH_OT_refresh_status, ORBITMESH_OT_start_server,
           ORBITMESH_OT_stop_server, ORBITMESH_OT_reimport, ORBITMESH_OT_open_folder, ORBITMESH_OT_regenerate,
           ORBITMESH_OT_remove_job)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    joblist.request_cancel()
    stop_server()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
