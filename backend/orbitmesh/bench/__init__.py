"""Benchmarks behind ``orbitmesh bench``; scripts in the repository's benchmarks/ call these too."""
