"""Benchmarks behind ``orbitmesh bench`` (part of the optional ``orbitmesh[train]`` tools).

Each module has ``run(**keywords) -> dict`` with plain keyword arguments (the CLI declares the
matching flags in :mod:`orbitmesh.cli.bench`) and may have ``format_table(result) -> str``;
scripts in the repository's benchmarks/ call these too.
"""
