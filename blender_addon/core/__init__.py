"""The add-on's bpy-free half: everything here runs (and is tested) without Blender.

* :mod:`.errors`    -- :class:`AddonError`, the one (message, fix) error type.
* :mod:`.manifest`  -- ``ADDON_VERSION``, read from ``blender_manifest.toml``.
* :mod:`.settings`  -- the generate settings, derived from the generated ``contract.py``.
* :mod:`.client`    -- the HTTP client for ``orbitmesh serve``.
* :mod:`.backends`  -- the server and subprocess ("In Blender") backends behind one interface.
* :mod:`.jobs`      -- the persisted job list and what a record turns into (regenerate arguments, metadata).
* :mod:`.session`   -- the module-level state of one Blender session: running jobs, last health, server.
* :mod:`.health`    -- the status line and panel values from a ``/health`` answer.
* :mod:`.png`       -- pixels -> sRGB RGBA bytes -> PNG (standard library and numpy).
* :mod:`.placement` -- the scale and offset that put an imported mesh on the ground, at its size.
* :mod:`.models`    -- the model manager through either backend: list, download (progress, cancel), remove.

The Blender half (properties, preferences, panels, operators, the importer) lives in the
package root and imports from here, never the other way round. Nothing here imports torch.
"""
