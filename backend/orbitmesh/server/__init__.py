"""``orbitmesh serve``: a localhost HTTP server with a FIFO job queue and one GPU worker.

FastAPI (Starlette) on uvicorn; the Blender add-on still talks to it with ``urllib``. Modules: :mod:`app`
(routes, error bodies), :mod:`middleware` (Host/Origin/token/path checks), :mod:`listener` (socket, uvicorn,
connection limits), :mod:`jobs` (queue, worker, restart recovery), :mod:`limits` (caps, memory and disk
estimates), :mod:`model_policy` (models a client may name), :mod:`retention` (old job folders),
:mod:`uploads` (image and settings checks), :mod:`security` (bind/token/name checks), :mod:`api_errors`.
"""
