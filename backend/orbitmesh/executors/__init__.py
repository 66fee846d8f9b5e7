"""Where jobs run: in this process (:mod:`local`) or on a pool of Ray worker actors (:mod:`ray_pool`).

Both are an :class:`~orbitmesh.executors.base.Executor`: ``run(request, settings, tracker)`` is thread-safe,
blocks until a worker is free and returns the GenerateResult with its files in ``settings.output_dir`` of
the caller's machine. The server's job manager and ``orbitmesh batch`` call one executor from
``executor.workers`` threads, so jobs run FIFO per free worker.
"""
