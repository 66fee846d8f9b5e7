"""OrbitMesh for Blender: image/text to textured mesh, from a sidebar panel or a script.

    bpy.ops.orbitmesh.generate(image_path="chair.png", seed=7, target_faces=20000,
                               texture_size=1024, size=1.0, wait=True)

Jobs run in a local ``orbitmesh serve`` or, "In Blender", in a child process using the
bundled wheels; this package itself only needs the standard library, numpy and bpy.
The bpy-facing modules are imported in ``register`` so that ``client``, ``backends`` and
``jobs`` stay importable (and testable) without Blender.
"""

from __future__ import annotations

_MODULES = ("properties", "preferences", "operators", "panels")


def _modules():
    import importlib

    return [importlib.import_module(f"{__name__}.{name}") for name in _MODULES]


def _initial_check() -> None:
    import bpy

    from . import operators

    try:
        operators.check_status(bpy.context, wait=False)
    except Exception as exc:  # the status line says it; never a traceback at startup
        print(f"OrbitMesh: backend check failed: {exc}")


def register() -> None:
    import bpy

    from . import jobs, preferences

    for mod in _modules():
        mod.register()
    jobs.set_job_list(jobs.JobList(preferences.user_dir() / "jobs.json"))
    if not bpy.app.background:
        bpy.app.timers.register(_initial_check, first_interval=1.0)


def unregister() -> None:
    import bpy

    from . import jobs

    if bpy.app.timers.is_registered(_initial_check):
        bpy.app.timers.unregister(_initial_check)
    for mod in reversed(_modules()):
        mod.unregister()
    jobs.set_job_list(None)
