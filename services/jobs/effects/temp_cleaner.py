"""Removal of old files from the temp directory (the ``cleanup_temp_files`` cron job)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path


def remove_old_files(directory: Path, *, max_age_seconds: float, now: float | None = None) -> list[Path]:
    """Delete regular files and symlinks under ``directory`` last modified over ``max_age_seconds`` ago.

    Symlinks are removed as links, never followed; directories are walked but kept. A file that
    disappears meanwhile (another worker took it) is skipped. Returns the paths removed.
    """
    cutoff = (time.time() if now is None else now) - max_age_seconds
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for root, dirs, files in os.walk(directory, followlinks=False):
        # os.walk lists a symlink to a directory among the directories; it is removed as a link too.
        linked_dirs = [name for name in dirs if Path(root, name).is_symlink()]
        for name in [*files, *linked_dirs]:
            path = Path(root, name)
            try:
                info = path.lstat()
                if (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)) and info.st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
    return removed
