"""``orbitmesh serve``: a localhost HTTP server with a FIFO job queue and one GPU worker.

Standard library only (``http.server``): nothing extra to install, and the Blender add-on
talks to it with ``urllib``. Modules: :mod:`app` (routing), :mod:`jobs` (queue + worker),
:mod:`multipart` (strict upload parser), :mod:`security` (bind/token/name checks),
:mod:`api_errors` (the JSON error type).
"""
