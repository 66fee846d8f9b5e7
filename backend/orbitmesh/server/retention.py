"""Which finished job folders a server removes: ``--keep-jobs N`` and ``--max-disk-gb``, oldest finished first.

Only finished jobs (done, failed, cancelled) are ever removed; queued and running ones are never touched. A
folder is first renamed to ``.trash-<id>`` (one atomic step: it leaves the job list at once, and a crash
mid-delete leaves no half job), then deleted; leftovers are deleted at the next start.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("orbitmesh.server")
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class Retention:
    keep_jobs: int | None = None  # at most this many finished jobs
    max_disk_gb: float | None = None  # all job folders together at most this size

    @property
    def active(self) -> bool:
        return self.keep_jobs is not None or self.max_disk_gb is not None

    def to_remove(self, finished: list[tuple[str, float, int]], total_bytes: int) -> list[str]:
        """Ids to remove, given the finished jobs as (id, finished time, bytes) and the size of every job folder
        together (``total_bytes``, queued and running ones included)."""
        oldest_first = sorted(finished, key=lambda job: (job[1], job[0]))
        remove: list[str] = []
        if self.keep_jobs is not None and len(oldest_first) > self.keep_jobs:
            remove = [job[0] for job in oldest_first[:len(oldest_first) - self.keep_jobs]]
        if self.max_disk_gb is not None:
            total = total_bytes - sum(size for job_id, _, size in oldest_first if job_id in remove)
            for job_id, _, size in oldest_first:
                if total <= self.max_disk_gb * 1e9:
                    break
                if job_id not in remove:
                    remove.append(job_id)
                    total -= size
        return remove


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (what the job takes on disk, roughly)."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def remove_folder(path: Path) -> None:
    """Rename ``path`` aside (atomic), then delete it; a failed delete is left for :func:`empty_trash`."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(2)}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def empty_trash(root: Path) -> None:
    for path in root.glob(f"{TRASH_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            log.warning("could not delete %s", path)
