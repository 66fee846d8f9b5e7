"""Headless-Blender sessions for the add-on tests, run as their own process:

    python tests/addon/blender_helpers.py server    ADDON.zip PHOTO OUT.json  # client zip + `orbitmesh serve`
    python tests/addon/blender_helpers.py inprocess ADDON.zip PHOTO OUT.json  # full zip (bundled wheel) + worker

bpy is imported first (before anything that could load pymeshlab: their embree symbols
clash). Each scenario records what it measured (objects, dimensions, materials, custom
properties, job states, undo results) into OUT.json; tests/addon/test_addon_blender.py asserts
on those numbers. PHOTO is the object photo the jobs reconstruct. Only real components run here:
the installed extension, Blender's glTF importer, `orbitmesh serve` / `orbitmesh generate` with
the `tiny-random` model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import types
import urllib.request
from pathlib import Path

import bpy  # noqa: E402  (first, see the module docstring)

ADDON = "bl_ext.user_default.orbitmesh"
# Small settings so one job takes seconds on a CPU.
FAST = dict(model="tiny-random", mc_resolution=64, target_faces=1000, texture_size=256)
CANCEL_STAGES = ("preprocess", "lrm", "grid_query")


# ----- a recording UILayout that checks every call against Blender's real API -------------------

UI_FUNCS = bpy.types.UILayout.bl_rna.functions
UI_ATTRS = {p.identifier for p in bpy.types.UILayout.bl_rna.properties}
ICONS = set(UI_FUNCS["label"].parameters["icon"].enum_items.keys())
CONTAINERS = {"row", "column", "box", "split", "column_flow", "grid_flow"}
PROP_FUNCS = {"prop", "prop_enum", "prop_search", "props_enum", "prop_menu_enum", "prop_tabs_enum"}


class LayoutError(Exception):
    pass


class RecordedOperator:
    """What ``layout.operator()`` returns: only the operator's real properties can be set."""

    def __init__(self, idname: str, rna) -> None:
        object.__setattr__(self, "_idname", idname)
        object.__setattr__(self, "_props", {p.identifier for p in rna.properties})

    def __setattr__(self, name, value):
        if name not in self._props:
            raise LayoutError(f"operator {self._idname} has no property {name!r}")
        object.__setattr__(self, name, value)


class RecordingLayout:
    def __init__(self, calls: list) -> None:
        object.__setattr__(self, "_calls", calls)

    def __setattr__(self, name, value):
        if name not in UI_ATTRS:
            raise LayoutError(f"UILayout has no attribute {name!r}")
        self._calls.append(("set", {name: value}))
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in UI_FUNCS:
            raise LayoutError(f"UILayout has no function {name!r}")
        params = [p for p in UI_FUNCS[name].parameters if not p.is_output]
        names = [p.identifier for p in params]

        def call(*args, **kwargs):
            if len(args) > len(names):
                raise LayoutError(f"{name}() takes {len(names)} arguments, got {len(args)}")
            bound = dict(zip(names, args, strict=False))  # fewer args than names is fine
            bound.update(kwargs)
            unknown = set(bound) - set(names)
            if unknown:
                raise LayoutError(f"{name}() has no argument(s) {sorted(unknown)}")
            missing = [p.identifier for p in params if p.is_required and p.identifier not in bound]
            if missing:
                raise LayoutError(f"{name}() is missing {missing}")
            for key in ("icon",):
                if key in bound and bound[key] not in ICONS:
                    raise LayoutError(f"{name}(): unknown icon {bound[key]!r}")
            for key in ("text", "placeholder"):
                if key in bound and not isinstance(bound[key], str):
                    raise LayoutError(f"{name}(): {key} must be a string, got {type(bound[key]).__name__}")
            if name in PROP_FUNCS:
                data, prop = bound["data"], bound["property"]
                if prop not in data.bl_rna.properties:
                    raise LayoutError(f"{name}(): {type(data).__name__} has no property {prop!r}")
                getattr(data, prop)
                if name == "prop_enum" and bound["value"] not in data.bl_rna.properties[prop].enum_items.keys():
                    raise LayoutError(f"prop_enum(): {bound['value']!r} is not an item of {prop}")
            if name == "progress" and not 0.0 <= float(bound.get("factor", 0.0)) <= 1.0:
                raise LayoutError(f"progress(): factor {bound.get('factor')} outside 0..1")
            if name == "template_icon" and not isinstance(bound.get("icon_value"), int):
                raise LayoutError("template_icon(): icon_value must be an int")
            self._calls.append((name, {k: v for k, v in bound.items() if isinstance(v, (str, int, float, bool))}))
            if name in CONTAINERS:
                return RecordingLayout(self._calls)
            if name == "operator":
                category, _, op = bound["operator"].partition(".")
                try:
                    rna = getattr(getattr(bpy.ops, category), op).get_rna_type()
                except (AttributeError, KeyError):
                    raise LayoutError(f"operator(): no operator {bound['operator']!r}") from None
                return RecordedOperator(bound["operator"], rna)
            return None

        return call


def rna_properties(rna) -> list[dict]:
    """Every property of an RNA struct (an operator's arguments, a property group) as plain data."""
    out = []
    for p in rna.properties:
        if p.identifier == "rna_type":
            continue
        d = {"name": p.identifier, "type": p.type, "label": p.name, "description": p.description,
             "skip_save": p.is_skip_save}
        if p.type == "INT":
            d.update(default=p.default, min=p.hard_min, max=p.hard_max)
        elif p.type == "ENUM":
            d.update(default=p.default, items=[i.identifier for i in p.enum_items])
        elif p.type in ("STRING", "BOOLEAN"):
            d.update(default=p.default)
        out.append(d)
    return out


def old_job_list_scenario(session, tmp: Path, image: str) -> dict:
    """A jobs.json as the previous add-on version wrote it (six settings, no text_to_image_model) plus keys
    this version does not know: it loads, says what it dropped, and its job regenerates."""
    jobs_core = sys.modules[ADDON + ".core.jobs"]
    record = {"id": "20250101-120000-old-ab12", "name": "a_product_photo_of_a_toy_tank", "backend": "server",
              "source_kind": "image", "image_path": image, "prompt": "",
              "settings": {"mode": "fast", "model": "tiny-random", "seed": 7, "mc_resolution": 64,
                           "target_faces": 1000, "texture_size": 256, "guidance_scale": 3.5},
              "size": 2.0, "status": "done", "stage": "export", "message": "done", "progress": 1.0, "eta_s": None,
              "error": None, "work_dir": str(tmp / "gone"), "job_dir": "", "glb_path": str(tmp / "gone" / "a.glb"),
              "preview_path": "", "remote_id": "r-old", "version": "0.1.0", "model": "tiny-random",
              "object_name": "", "created": 1735732800.0, "finished": 1735732810.0, "thumbnail_id": 12}
    path = tmp / "old-list" / "jobs.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"jobs": [record]}))
    current = session.job_list()
    try:
        session.set_job_list(jobs_core.JobList(path))
        res = {"warnings": list(session.job_list().warnings), "settings": dict(session.job_list().records[0].settings)}
        before = snapshot()
        res.update(call_op(bpy.ops.orbitmesh.regenerate, job_id=record["id"], wait=True))
        new = [n for n in snapshot()["objects"] if n not in before["objects"]]
        res["object"] = describe(bpy.data.objects[new[0]]) if len(new) == 1 else None
        res["statuses"] = [r.status for r in session.job_list().records]
        res["saved_settings"] = json.loads(path.read_text())["jobs"][0]["settings"]
    finally:
        session.set_job_list(current)
    return res


def draw_with_stub(draw, *args) -> list:
    calls: list = []
    draw(RecordingLayout(calls), *args)
    return calls


def draw_all_panels(context) -> dict:
    """Every registered OrbitMesh panel and the preferences, through the recording layout."""
    out = {}
    for name in ("VIEW3D_PT_orbitmesh", "VIEW3D_PT_orbitmesh_jobs"):
        cls = getattr(bpy.types, name)
        calls: list = []
        cls.draw(types.SimpleNamespace(layout=RecordingLayout(calls)), context)
        out[name] = calls
    prefs_mod = sys.modules[ADDON + ".preferences"]
    out["preferences"] = draw_with_stub(prefs_mod.draw_preferences, prefs_mod.get_prefs(context), context)
    return out


# ----- helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot() -> dict:
    return {"objects": sorted(o.name for o in bpy.data.objects), "meshes": len(bpy.data.meshes),
            "materials": len(bpy.data.materials), "images": len(bpy.data.images)}


def describe(obj) -> dict:
    importer = sys.modules[ADDON + ".importer"]
    img = importer.material_image(obj)
    co = [v.co for v in obj.data.vertices]
    zs = [c.z for c in co]
    xs = [c.x for c in co]
    ys = [c.y for c in co]
    return {
        "name": obj.name, "type": obj.type, "location": list(obj.location), "scale": list(obj.scale),
        "dimensions": list(obj.dimensions), "faces": len(obj.data.polygons), "uv_layers": len(obj.data.uv_layers),
        "local_min_z": min(zs), "local_centre_xy": [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2],
        "material": obj.active_material.name if obj.active_material else None,
        "texture_size": list(img.size) if img is not None else None,
        "texture_has_pixels": bool(img is not None and img.has_data),
        "selected": obj.select_get(), "active": bpy.context.view_layer.objects.active == obj,
        "selected_count": len([o for o in bpy.context.view_layer.objects if o.select_get()]),
        "props": {k: obj[k] for k in obj.keys() if k.startswith("orbitmesh_")},
    }


def call_op(fn, **kw) -> dict:
    """Run an operator; a RuntimeError is how Blender hands a script an ERROR report."""
    try:
        return {"result": sorted(fn(**kw)), "error": None}
    except RuntimeError as exc:
        return {"result": None, "error": str(exc)}


def generate_with_undo(**kw) -> dict:
    """generate(wait=True) between two undo pushes (what Blender's UI does around an UNDO operator),
    then one undo."""
    bpy.ops.ed.undo_push(message="before OrbitMesh")
    before = snapshot()
    t0 = time.perf_counter()
    res = call_op(bpy.ops.orbitmesh.generate, wait=True, **kw)
    res["seconds"] = time.perf_counter() - t0
    res["before"] = before
    res["after"] = snapshot()
    new = [n for n in res["after"]["objects"] if n not in before["objects"]]
    res["new_objects"] = new
    if len(new) == 1:
        res["object"] = describe(bpy.data.objects[new[0]])
    bpy.ops.ed.undo_push(message="OrbitMesh Generate")
    bpy.ops.ed.undo()
    res["after_undo"] = snapshot()
    return res


def cancel_when_stage(session, stages: tuple[str, ...], info: dict, timeout: float = 120.0) -> threading.Thread:
    """From another thread (no bpy), cancel the running job once it reaches one of ``stages``."""

    def run():
        t0 = time.time()
        while time.time() - t0 < timeout:
            for job_id, handle in list(session.ACTIVE.items()):
                s = handle.state()
                if s.status == "running" and s.stage in stages:
                    info["cancelled_at_stage"] = s.stage
                    info["cancelled_at_progress"] = s.progress
                    session.request_cancel(job_id)
                    return
            time.sleep(0.02)
        info["cancel_timeout"] = True

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def kill_worker_when_running(session, info: dict, timeout: float = 120.0) -> threading.Thread:
    """From another thread (no bpy), SIGKILL the warm worker running a job (as an out-of-memory kill would)."""

    def run():
        t0 = time.time()
        while time.time() - t0 < timeout:
            for handle in list(session.ACTIVE.values()):
                if handle.state().stage and getattr(handle, "worker", None) is not None:
                    info["killed_pid"] = handle.worker.pid
                    os.kill(handle.worker.pid, signal.SIGKILL)
                    return
            time.sleep(0.02)
        info["kill_timeout"] = True

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def worker_pid_of_last_job(session):
    """``worker_pid`` in the job.json of the newest job (None when it has no pipeline job folder)."""
    rec = session.job_list().records[0]
    path = Path(rec.job_dir) / "job.json" if rec.job_dir else None
    return json.loads(path.read_text()).get("worker_pid") if path and path.is_file() else None


def warm_pids(session) -> list[int]:
    return [w.pid for w in session.WORKERS if w.alive]


def watch_progress(session, samples: list, stop: threading.Event) -> threading.Thread:
    """From another thread (no bpy), record each change of (status, stage, progress) of the running jobs."""

    def run():
        last = None
        while not stop.is_set():
            for handle in list(session.ACTIVE.values()):
                s = handle.state()
                now = [s.status, s.stage, s.progress]
                if now != last:
                    samples.append(now)
                    last = now
            time.sleep(0.002)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def cancel_scenario(session, image: str) -> dict:
    info: dict = {}
    bpy.ops.ed.undo_push(message="before cancel")
    before = snapshot()
    cursor = list(bpy.context.scene.cursor.location)
    # Cancel from the earliest stages on, and give the job a mesh stage that takes a while: the
    # client sees stage changes only at its poll rate, and the tiny model's grid query is fast.
    thread = cancel_when_stage(session, CANCEL_STAGES, info)
    res = call_op(bpy.ops.orbitmesh.generate, image_path=image, wait=True,
                  **dict(FAST, mc_resolution=160, target_faces=8000, texture_size=1024))
    thread.join(5)
    rec = session.job_list().records[0]
    info.update(res, before=before, after=snapshot(),
                cursor_unchanged=list(bpy.context.scene.cursor.location) == cursor, record_status=rec.status,
                record_id=rec.id, remote_id=rec.remote_id, work_dir=rec.work_dir,
                glb_files=[p.name for p in Path(rec.work_dir).rglob("*.glb")], active_jobs=len(session.ACTIVE),
                state_running=bpy.context.window_manager.orbitmesh_state.running)
    return info


def paint_disc_image(name: str, size: int = 192):
    """An unsaved image datablock: an orange disc with a dark rim on white."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - size / 2, yy - size / 2)
    px = np.ones((size, size, 4), np.float32)
    px[r < size * 0.3, :3] = (0.9, 0.45, 0.1)
    px[(r >= size * 0.27) & (r < size * 0.3), :3] = (0.2, 0.1, 0.05)
    img = bpy.data.images.new(name, size, size, alpha=True)
    img.pixels.foreach_set(px.ravel())
    return img


def install(zip_path: str) -> dict:
    res = call_op(bpy.ops.extensions.package_install_files, filepath=zip_path, repo="user_default",
                  enable_on_install=True)
    res["enabled"] = ADDON in bpy.context.preferences.addons
    return res


def setup_scene(out: dict) -> None:
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    out["cursor"] = [1.0, 2.0, 3.0]


# ----- sessions --------------------------------------------------------------------------------


def session_server(zip_path: str, image: str, out: dict) -> None:
    out["install"] = install(zip_path)
    session = sys.modules[ADDON + ".core.session"]
    prefs = bpy.context.preferences.addons[ADDON].preferences
    tmp = Path(tempfile.mkdtemp(prefix="orbitmesh-addon-test-"))
    prefs.backend = "SERVER"
    prefs.server_url = f"http://127.0.0.1:{free_port()}"
    prefs.python_path = sys.executable
    prefs.output_dir = str(tmp / "jobs")
    st = bpy.context.window_manager.orbitmesh_state

    # The properties Blender registered for the generate operator and the panel.
    out["properties"] = {"generate": rna_properties(bpy.ops.orbitmesh.generate.get_rna_type()),
                         "panel": rna_properties(bpy.context.scene.orbitmesh.bl_rna)}

    # Panel + preferences before anything ran, for every source kind.
    panel = bpy.context.scene.orbitmesh
    out["draw_idle"] = {}
    for source in ("FILE", "DATABLOCK", "PROMPT"):
        panel.source = source
        out["draw_idle"][source] = draw_all_panels(bpy.context)
    panel.source = "FILE"
    # The stub must catch a typo, or the panel checks mean nothing.
    try:
        draw_with_stub(lambda layout: layout.prop(panel, "seeed"))
        out["stub_catches_typo"] = False
    except LayoutError as exc:
        out["stub_catches_typo"] = str(exc)

    t0 = time.perf_counter()
    out["start_server"] = call_op(bpy.ops.orbitmesh.start_server, wait=True, timeout=120.0)
    out["start_server"].update(seconds=time.perf_counter() - t0, status_ok=st.status_ok, status_line=st.status_line,
                               modes=st.modes)
    out["draw_ready"] = draw_all_panels(bpy.context)
    setup_scene(out)
    out["generate"] = generate_with_undo(image_path=image, size=2.0, seed=7, **FAST)
    rec = session.job_list().records[0]
    out["generate"]["record"] = {"status": rec.status, "remote_id": rec.remote_id, "glb_path": rec.glb_path,
                                 "work_dir": rec.work_dir, "id": rec.id}
    if rec.remote_id:
        with urllib.request.urlopen(f"{prefs.server_url}/jobs/{rec.remote_id}", timeout=10) as resp:
            out["generate"]["server_job"] = json.loads(resp.read())

    # An image made in Blender and never saved: the add-on writes its pixels to a PNG.
    painted = paint_disc_image("painted disc")
    out["datablock"] = generate_with_undo(image_name=painted.name, size=0.5, **FAST)
    out["datablock"]["input_png"] = sorted(p.name for p in Path(session.job_list().records[0].work_dir).glob("*.png"))

    out["cancel"] = cancel_scenario(session, image)
    remote = out["cancel"]["remote_id"]
    deadline = time.time() + 60
    while remote and time.time() < deadline:
        with urllib.request.urlopen(f"{prefs.server_url}/jobs/{remote}", timeout=10) as resp:
            server_job = json.loads(resp.read())
        if server_job["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.2)
    out["cancel"]["server_status"] = server_job["status"] if remote else None

    # Errors: a file that is not an image (server 400), a missing file, a mode the backend lacks.
    bad = tmp / "not_an_image.png"
    bad.write_bytes(b"this is not a PNG")
    before = snapshot()
    out["bad_image"] = call_op(bpy.ops.orbitmesh.generate, image_path=str(bad), wait=True, **FAST)
    out["bad_image"].update(panel_error=st.error, panel_fix=st.error_fix, unchanged=snapshot() == before)
    out["missing_image"] = call_op(bpy.ops.orbitmesh.generate, image_path=str(tmp / "nope.png"), wait=True)
    out["missing_image"]["panel_error"] = st.error
    modes = st.modes
    st.modes = "fast"
    out["quality_unavailable"] = call_op(bpy.ops.orbitmesh.generate, image_path=image, mode="quality", wait=True)
    out["quality_unavailable"]["draw"] = draw_all_panels(bpy.context)["VIEW3D_PT_orbitmesh"]
    st.modes = modes

    # Job list: re-import a finished job; regenerate it with the same settings.
    done = next(r for r in session.job_list().records if r.status == "done" and r.name.startswith("a_product"))
    before = snapshot()
    out["reimport"] = call_op(bpy.ops.orbitmesh.reimport, job_id=done.id)
    new = [n for n in snapshot()["objects"] if n not in before["objects"]]
    out["reimport"]["object"] = describe(bpy.data.objects[new[0]]) if len(new) == 1 else None
    out["regenerate_kwargs"] = sys.modules[ADDON + ".core.jobs"].regenerate_kwargs(done)
    before = snapshot()
    out["regenerate"] = call_op(bpy.ops.orbitmesh.regenerate, job_id=done.id, wait=True)
    new = [n for n in snapshot()["objects"] if n not in before["objects"]]
    out["regenerate"]["object"] = describe(bpy.data.objects[new[0]]) if len(new) == 1 else None

    # The panel with a job running (state as the modal operator sets it) and every kind of record.
    st.running, st.job_id, st.stage, st.progress, st.eta_s, st.message = True, "x", "lrm", 0.42, 12.0, "encoder 1/1"
    out["draw_busy"] = draw_all_panels(bpy.context)
    st.running = False
    out["job_statuses"] = [r.status for r in session.job_list().records]
    jobs_file = Path(bpy.utils.extension_path_user(ADDON, create=False)) / "jobs.json"
    out["jobs_json_statuses"] = [j["status"] for j in json.loads(jobs_file.read_text())["jobs"]]
    out["old_jobs"] = old_job_list_scenario(session, tmp, image)
    out["stop_server"] = call_op(bpy.ops.orbitmesh.stop_server)
    out["refresh_after_stop"] = call_op(bpy.ops.orbitmesh.refresh_status, wait=True)
    out["refresh_after_stop"].update(status_ok=st.status_ok, status_line=st.status_line)


def session_inprocess(zip_path: str, image: str, out: dict) -> None:
    out["install"] = install(zip_path)
    session = sys.modules[ADDON + ".core.session"]
    prefs_mod = sys.modules[ADDON + ".preferences"]
    prefs = bpy.context.preferences.addons[ADDON].preferences
    tmp = Path(tempfile.mkdtemp(prefix="orbitmesh-addon-test-"))
    prefs.backend = "INPROCESS"
    prefs.output_dir = str(tmp / "jobs")
    st = bpy.context.window_manager.orbitmesh_state
    bundled = prefs_mod.bundled_site_packages()
    out["bundled_site_packages"] = bundled
    out["python_paths"] = prefs_mod.python_paths(prefs)
    out["refresh"] = call_op(bpy.ops.orbitmesh.refresh_status, wait=True)
    out["refresh"].update(status_ok=st.status_ok, status_line=st.status_line, modes=st.modes,
                          orbitmesh_path=session.LAST_HEALTH.get("inprocess", {}).get("path"))
    out["draw_ready"] = draw_all_panels(bpy.context)
    setup_scene(out)
    samples: list = []
    stop = threading.Event()
    watcher = watch_progress(session, samples, stop)
    out["generate"] = generate_with_undo(image_path=image, size=1.5, seed=3, **FAST)
    stop.set()
    watcher.join(5)
    out["generate"]["progress_samples"] = samples  # the backend's jsonl `progress`, as the add-on showed it
    rec = session.job_list().records[0]
    job_json = Path(rec.job_dir) / "job.json" if rec.job_dir else None
    out["generate"]["record"] = {"status": rec.status, "job_dir": rec.job_dir, "glb_path": rec.glb_path,
                                 "work_dir": rec.work_dir}
    out["generate"]["job_json_status"] = json.loads(job_json.read_text())["status"] if job_json and \
        job_json.is_file() else None
    out["generate"]["log"] = (Path(rec.work_dir) / "generate.log").read_text()[:2000]
    out["generate"]["worker_pid"] = worker_pid_of_last_job(session)

    # The warm worker (Keep Loaded, 10 minutes by default): the second job runs in the same child.
    out["keep_loaded_minutes"] = prefs.keep_loaded_minutes
    out["second"] = generate_with_undo(image_path=image, size=1.5, seed=4, **FAST)
    out["second"].update(worker_pid=worker_pid_of_last_job(session), warm_pids=warm_pids(session))

    out["cancel"] = cancel_scenario(session, image)
    out["cancel"]["job_json_statuses"] = [json.loads(p.read_text())["status"]
                                          for p in Path(out["cancel"]["work_dir"]).glob("*/job.json")]
    out["cancel"]["warm_pids"] = warm_pids(session)  # the cancel stopped the job, not the child

    # A child process that dies hard (as an out-of-memory kill would) must not take Blender with it.
    crash = tmp / "crash-site"
    (crash / "orbitmesh").mkdir(parents=True)
    (crash / "orbitmesh" / "__init__.py").write_text("__version__ = 'crash'\n")
    (crash / "orbitmesh" / "__main__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    prefs.site_packages = str(crash)
    before = snapshot()
    out["crash"] = call_op(bpy.ops.orbitmesh.generate, image_path=image, wait=True)
    out["crash"].update(panel_error=st.error, unchanged=snapshot() == before,
                        record_status=session.job_list().records[0].status, blender_alive=True)
    prefs.site_packages = ""
    out["draw_after"] = draw_all_panels(bpy.context)

    # Keep Loaded 0: a fresh child per job (the warm worker retires).
    prefs.keep_loaded_minutes = 0
    out["fresh"] = call_op(bpy.ops.orbitmesh.generate, image_path=image, wait=True, **FAST)
    out["fresh"].update(worker_pid=worker_pid_of_last_job(session), warm_pids=warm_pids(session))
    prefs.keep_loaded_minutes = 10

    # A warm worker killed mid-job: that job fails, the next one starts a fresh child.
    info: dict = {}
    thread = kill_worker_when_running(session, info)
    out["killed"] = call_op(bpy.ops.orbitmesh.generate, image_path=image, wait=True, **FAST)
    thread.join(5)
    out["killed"].update(info, panel_error=st.error, record_status=session.job_list().records[0].status)
    out["after_kill"] = call_op(bpy.ops.orbitmesh.generate, image_path=image, wait=True, **FAST)
    out["after_kill"].update(worker_pid=worker_pid_of_last_job(session), warm_pids=warm_pids(session))
    out["draw_warm"] = draw_all_panels(bpy.context)["preferences"]

    # Disabling the add-on ends the worker.
    workers = [w for w in session.WORKERS if w.alive]
    out["disable"] = call_op(bpy.ops.preferences.addon_disable, module=ADDON)
    out["disable"].update(workers_before=len(workers), workers_alive_after=[w.alive for w in workers],
                          exit_reasons=[w.exit_reason for w in workers])


def main() -> int:
    kind, zip_path, image, out_path = sys.argv[1:5]
    out: dict = {"bpy_version": bpy.app.version_string}
    try:
        {"server": session_server, "inprocess": session_inprocess}[kind](zip_path, image, out)
    except Exception:
        out["fatal"] = traceback.format_exc()
    finally:
        try:  # never leave a server behind
            sys.modules[ADDON + ".core.session"].stop_server()
        except Exception:
            pass
        Path(out_path).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
