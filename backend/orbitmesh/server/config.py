"""``ServerConfig``: how one ``orbitmesh serve`` listens and what it allows (light: the CLI reads its defaults
without importing the web stack)."""

from __future__ import annotations

from dataclasses import dataclass

from orbitmesh.server.limits import JobLimits
from orbitmesh.server.retention import Retention


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allow_remote: bool = False
    max_upload_bytes: int = 50 << 20
    default_model: str | None = None
    keepalive_s: float = 10.0  # a comment on an idle event stream; also the idle keep-alive of a connection
    header_timeout_s: float = 10.0  # a connection must send its request headers within this
    body_timeout_s: float = 60.0  # longest pause inside a request body
    max_connections: int = 128
    limits: JobLimits = JobLimits()
    retention: Retention = Retention()
    allow_model_paths: bool = False
    allow_remote_downloads: bool = False  # POST /models/{name}/download from other machines
    access_log: bool = True
