"""OrbitMesh for Blender: image/text to textured mesh, from a sidebar panel or a script.

    bpy.ops.orbitmesh.generate(image_path="chair.png", seed=7, target_faces=20000,
                               texture_size=1024, size=1.0, wait=True)

Jobs run in a local ``orbitmesh serve`` or, "In Blender", in a child process using the
bundled wheels; this package itself only needs the standard library, numpy and bpy.

Layout (as glTF-Blender-IO keeps ``io/`` apart from ``blender/``):

* ``contract.py``   -- generated from the backend's ``GenerateRequest`` (``python build.py --write-contract``).
* ``core/``         -- bpy-free: errors, version, settings, HTTP client, backends (and the warm
  In-Blender worker, ``core/worker.py``), job list, session state (running jobs, last health, server
  process, workers), status line, models (list, download, remove: ``core/models.py``), PNG encoding,
  placement.
* ``properties.py``, ``preferences.py``, ``panels.py`` -- Blender UI and data.
* ``ops_generate.py`` (generate, cancel), ``ops_server.py`` (status check, start/stop server),
  ``ops_jobs.py`` (re-import, open folder, regenerate, remove), ``ops_models.py`` (the Models box's
  refresh, download, cancel, remove; the panel's model menu), ``ops_common.py`` (shared helpers).
* ``importer.py`` (GLB into the scene), ``images.py`` (an image datablock as a file).

The bpy modules are imported in ``register`` so that ``core`` stays importable (and testable)
without Blender.
"""

from __future__ import annotations

# Registration order; unregistered in reverse (jobs and child downloads are stopped before the server stops).
_MODULES = ("properties", "preferences", "ops_server", "ops_generate", "ops_jobs", "ops_models", "panels")


def _modules():
    import importlib

    return [importlib.import_module(f"{__name__}.{name}") for name in _MODULES]


def _initial_check() -> None:
    import bpy

    from . import ops_server

    try:
        ops_server.check_status(bpy.context, wait=False)
    except Exception as exc:  # the status line says it; never a traceback at startup
        print(f"OrbitMesh: backend check failed: {exc}")


def register() -> None:
    import atexit

    import bpy

    from . import preferences
    from .core import jobs, session

    for mod in _modules():
        mod.register()
    session.set_job_list(jobs.JobList(preferences.user_dir() / "jobs.json"))
    atexit.register(session.stop_workers)  # closing Blender ends the warm In-Blender worker
    if not bpy.app.background:
        bpy.app.timers.register(_initial_check, first_interval=1.0)


def unregister() -> None:
    import atexit

    import bpy

    from .core import session

    if bpy.app.timers.is_registered(_initial_check):
        bpy.app.timers.unregister(_initial_check)
    for mod in reversed(_modules()):
        mod.unregister()  # ops_generate cancels the running jobs
    session.stop_workers()  # no worker outlives the add-on
    atexit.unregister(session.stop_workers)
    session.set_job_list(None)
