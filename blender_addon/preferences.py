"""Add-on preferences: which backend, where it is, models, device, commercial use only, how long the In-Blender
backend stays loaded, and the Models box (every model of the backend: kind, licence, size, status; Download,
Cancel, Remove); plus helpers to build a backend."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from .core import backends, models, session, worker
from .core.client import DEFAULT_URL
from .core.errors import AddonError

ADDON_ID = __package__
BACKENDS = [
    ("SERVER", "Local server", "Talk to `orbitmesh serve` over HTTP (this machine or a workstation)"),
    ("INPROCESS", "In Blender", "Run jobs with Blender's Python and the bundled wheels, in a child process "
                                "so a crash or out-of-memory cannot take Blender down"),
]


def _retire_workers(prefs, context) -> None:
    """A setting the In-Blender worker was started with changed: it finishes its jobs and stops (the next job
    starts one with the new settings; switching to the server frees its memory now)."""
    session.retire_workers()


DEVICES = [("auto", "Auto", "CUDA, then Metal, then CPU"), ("cuda", "CUDA", "NVIDIA GPU"),
           ("mps", "Metal", "Apple GPU"), ("cpu", "CPU", "Slow for real models")]


class OrbitMeshPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend: EnumProperty(name="Backend", items=BACKENDS, default="SERVER", update=_retire_workers)
    server_url: StringProperty(name="Server URL", default=DEFAULT_URL,
                               description="Address of `orbitmesh serve` (loopback by default)")
    server_token: StringProperty(name="Token", subtype="PASSWORD",
                                 description="Bearer token, only if the server was started with one")
    python_path: StringProperty(name="Python", subtype="FILE_PATH",
                                description="Python of an environment with orbitmesh installed, used by Start "
                                            "Server; empty = Blender's Python with the bundled wheels")
    site_packages: StringProperty(name="Site-packages", subtype="DIR_PATH", update=_retire_workers,
                                  description="Extra folder with orbitmesh and its dependencies (for Python "
                                              f"{sys.version_info[0]}.{sys.version_info[1]}) when the add-on has "
                                              "no bundled wheels")
    model_dir: StringProperty(name="Model Folder", subtype="DIR_PATH", update=_retire_workers,
                              description="Shared model folder; empty = OrbitMesh's default")
    device: EnumProperty(name="Device", items=DEVICES, default="auto", update=_retire_workers)
    output_dir: StringProperty(name="Job Folder", subtype="DIR_PATH",
                               description="Where job folders go; empty = the add-on's user folder")
    commercial_only: BoolProperty(
        name="Commercial use only", default=False, update=_retire_workers,
        description="Refuse models whose licence does not allow commercial use (VFusion3D: use TripoSR); models "
                    "free only under a revenue cap (Stability AI's) run with a warning. Sent with every job; a "
                    "server started with --commercial-only applies it to every job anyway")
    keep_loaded_minutes: IntProperty(
        name="Keep Loaded (minutes)", default=10, min=0, max=1440, soft_max=120, update=_retire_workers,
        description="In Blender: keep the backend process, with torch and the model loaded, for this many minutes "
                    "after a job so that the next job starts at once; 0 = a fresh process for every job")
    release_when_idle: BoolProperty(
        name="Release GPU Memory When Idle", default=False, update=_retire_workers,
        description="In Blender: free the loaded model and its GPU memory after a shorter idle time; the process "
                    "stays, and the next job loads the model again")
    release_after_minutes: IntProperty(
        name="Release After (minutes)", default=2, min=1, max=1440, update=_retire_workers,
        description="Idle minutes before the loaded model and GPU memory are freed (shorter than Keep Loaded)")
    show_models: BoolProperty(name="Models", default=True, description="Show the backend's models")

    def draw(self, context) -> None:
        draw_preferences(self.layout, self, context)


def draw_preferences(layout, prefs, context) -> None:
    layout.prop(prefs, "backend", expand=True)
    col = layout.column()
    if prefs.backend == "SERVER":
        col.prop(prefs, "server_url")
        col.prop(prefs, "server_token")
        col.prop(prefs, "python_path")
        row = col.row(align=True)
        row.operator("orbitmesh.start_server", icon="PLAY")
        row.operator("orbitmesh.stop_server", icon="PAUSE")
    else:
        col.prop(prefs, "keep_loaded_minutes")
        row = col.row()
        row.enabled = prefs.keep_loaded_minutes > 0
        row.prop(prefs, "release_when_idle")
        sub = row.row()
        sub.enabled = prefs.release_when_idle
        sub.prop(prefs, "release_after_minutes", text="After")
        warm = [w for w in session.WORKERS if w.alive]
        col.label(text=f"Backend loaded (process {warm[-1].pid})" if warm else "Backend not loaded",
                  icon="LINKED" if warm else "UNLINKED")
    col.prop(prefs, "site_packages")
    bundled = bundled_site_packages()
    col.label(text=f"Bundled wheels: {bundled}" if bundled else "Bundled wheels: none (client package)",
              icon="PACKAGE")
    col.prop(prefs, "model_dir")
    col.prop(prefs, "device")
    col.prop(prefs, "output_dir")
    col.prop(prefs, "commercial_only")
    state = context.window_manager.orbitmesh_state
    row = layout.row()
    row.label(text=state.status_line, icon="CHECKMARK" if state.status_ok else "ERROR")
    row.operator("orbitmesh.refresh_status", text="", icon="FILE_REFRESH")
    draw_models_box(layout, prefs)


def draw_models_box(layout, prefs) -> None:
    """Every model of the configured backend, grouped by kind: name, licence and commercial use, size, status
    (available / not downloaded / partial / downloading NN%) and its buttons. Reads only cached data."""
    view = models.VIEW
    backend = "server" if prefs.backend == "SERVER" else "inprocess"
    box = layout.box()
    header = box.row()
    header.prop(prefs, "show_models", icon="TRIA_DOWN" if prefs.show_models else "TRIA_RIGHT", emboss=False)
    running = sum(view.state_of(name, backend) is not None for name in view.downloads)
    if running:
        header.label(text=f"{running} downloading", icon="SORTTIME")
    header.operator("orbitmesh.models_refresh", text="", icon="FILE_REFRESH")
    if not prefs.show_models:
        return
    rows, listed = view.rows_for(backend, session.LAST_HEALTH.get(backend))
    if view.loading:
        box.label(text="listing the models...", icon="TIME")
    if view.backend == backend and view.error:
        sub = box.column(align=True)
        sub.alert = True
        sub.label(text=view.error["message"], icon="ERROR")
        if view.error.get("fix"):
            sub.label(text="Fix: " + view.error["fix"], icon="INFO")
    if not rows:
        box.label(text="No models listed yet: press Refresh", icon="INFO")
        return
    if not listed:
        box.label(text="From the last backend check: Refresh for partial downloads and Remove", icon="INFO")
    kind = None
    col = box.column()
    for row in models.sorted_rows(rows):
        if row.get("kind") != kind:
            kind = row.get("kind")
            col.label(text=models.KIND_LABELS.get(str(kind), str(kind)), icon=models.KIND_ICONS.get(str(kind), "DOT"))
        draw_model_row(col, row, view.state_of(str(row["name"]), backend), listed=listed)


def draw_model_row(layout, row: dict, state, *, listed: bool) -> None:
    """One model: name | licence, commercial use | size | status and buttons; its last outcome below."""
    name = str(row["name"])
    running = state is not None and not state.terminal
    line = layout.row()
    split = line.split(factor=0.3)
    split.label(text=name + (" (default)" if row.get("default") else ""))
    split = split.split(factor=0.45)
    sub = split.row()
    sub.alert = row.get("commercial") == "no"
    sub.label(text=models.licence_text(row))
    split = split.split(factor=0.22)
    split.label(text=models.size_text(row.get("size_gb")))
    cell = split.row(align=True)
    status = models.status_text(row, state if running else None)
    if running:
        cell.progress(factor=state.progress, type="BAR", text=status)
        cell.operator("orbitmesh.model_cancel", text="", icon="CANCEL").model = name
        return
    cell.label(text=status, icon="CHECKMARK" if row.get("available") else "IMPORT")
    downloadable = row.get("downloadable", not row.get("available")) and not row.get("available")
    if downloadable:
        cell.operator("orbitmesh.model_download", text="Resume" if row.get("partial_bytes") else "Download",
                      icon="IMPORT").model = name
    if listed and (row.get("managed") or row.get("partial_bytes")):
        cell.operator("orbitmesh.model_remove", text="", icon="TRASH").model = name
    if state is None:
        return
    note = layout.column(align=True)
    if state.error:
        note.alert = True
        what = "download failed" if state.message != "remove failed" else "remove failed"
        note.label(text=f"{name}: {what}: {state.error.get('message') or '?'}", icon="ERROR")
        if state.error.get("fix"):
            note.label(text="Fix: " + str(state.error["fix"]), icon="INFO")
    elif state.status == "cancelled" or state.message != "done":
        note.label(text=f"{name}: {state.message}", icon="INFO")


def get_prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is None:
        raise AddonError("the OrbitMesh add-on is not enabled", fix="enable it in Preferences > Add-ons")
    return addon.preferences


def user_dir() -> Path:
    """The add-on's writable folder (jobs list, server log, default job folders)."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, create=True))
    except (ValueError, AttributeError):  # installed as a legacy add-on
        path = Path(bpy.utils.user_resource("DATAFILES", path="orbitmesh", create=True) or
                    Path(tempfile.gettempdir()) / "orbitmesh")
        path.mkdir(parents=True, exist_ok=True)
        return path


def output_root(prefs) -> Path:
    path = Path(bpy.path.abspath(prefs.output_dir)) if prefs.output_dir else user_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_site_packages() -> str | None:
    """Blender's extension site-packages when it holds orbitmesh (the 'full' package's wheels)."""
    try:
        base = bpy.utils.user_resource("EXTENSIONS")
    except Exception:
        return None
    path = os.path.join(base, ".local", "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                        "site-packages")
    return path if os.path.isfile(os.path.join(path, "orbitmesh", "__init__.py")) else None


def python_paths(prefs) -> list[str]:
    paths = []
    if prefs.site_packages:
        paths.append(bpy.path.abspath(prefs.site_packages).rstrip("/\\") or prefs.site_packages)
    bundled = bundled_site_packages()
    if bundled:
        paths.append(bundled)
    return paths


def make_backend(prefs):
    """The backend the preferences select (raises AddonError when misconfigured)."""
    if prefs.backend == "SERVER":
        return backends.ServerBackend(prefs.server_url, token=prefs.server_token or None,
                                      commercial_only=prefs.commercial_only)
    if prefs.site_packages and not os.path.isdir(bpy.path.abspath(prefs.site_packages)):
        raise AddonError(f"the site-packages folder {prefs.site_packages} does not exist",
                         fix="correct it in the OrbitMesh add-on preferences")
    options = dict(model_dir=bpy.path.abspath(prefs.model_dir) if prefs.model_dir else "", device=prefs.device,
                   commercial_only=prefs.commercial_only)
    if prefs.keep_loaded_minutes <= 0:  # a fresh child process per job
        return backends.SubprocessBackend(sys.executable, python_paths(prefs), **options)
    return worker.WorkerBackend(sys.executable, python_paths(prefs), keep_alive_s=60.0 * prefs.keep_loaded_minutes,
                                release_after_s=60.0 * prefs.release_after_minutes if prefs.release_when_idle else 0.0,
                                log_path=str(user_dir() / "worker.log"), **options)


CLASSES = (OrbitMeshPreferences,)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
